"""results/<run>/summary.json: per-iteration counts and scores, base and final evaluation."""
from lionflow.smk import setup_logging
from lionflow.summary import summarize

log = setup_logging(snakemake)
summary = summarize(snakemake.input, snakemake.output.summary, run=snakemake.config["run"])
log.info("summary written: %d iterations, final eval %s", len(summary["iterations"]), summary["final_eval"])
