"""Hard: the teacher beats the student by at least the threshold; easy: the rest."""
from lionflow.discrimination import write_split_hard_easy
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
n_hard, n_easy, n_failed = write_split_hard_easy(snakemake.input.scores, snakemake.params.threshold,
                                                 snakemake.output.hard, snakemake.output.easy)
log.info("%d hard, %d easy, %d excluded (referee failures)", n_hard, n_easy, n_failed)
