"""The base student: builtin:tiny is built locally; an HF id or directory is loaded and saved."""
from lionflow.smk import setup_logging
from lionflow.student.builtin import resolve_base_model

log = setup_logging(snakemake)
resolve_base_model(snakemake.params.base_model, snakemake.output[0], seed=snakemake.params.seed,
                   chat_template=snakemake.params.chat_template)
log.info("base student %s saved to %s", snakemake.params.base_model, snakemake.output[0])
