"""Hard: the teacher beats the student by at least the threshold; easy: the rest."""
from lionflow.discrimination import split_warning, write_split_hard_easy
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
n_hard, n_easy, n_failed = write_split_hard_easy(snakemake.input.scores, snakemake.params.threshold,
                                                 snakemake.output.hard, snakemake.output.easy)
log.info("%d hard, %d easy, %d excluded (referee failures)", n_hard, n_easy, n_failed)
# Not a param (editing the band changes no split): read from the config, like the summary's warning.
if warning := split_warning(n_hard, n_easy, snakemake.config["discrimination"]["hard_fraction_band"],
                            snakemake.params.threshold):
    log.warning(warning)
