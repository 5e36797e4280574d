"""results/<run>/summary.json: per-iteration counts and scores, base and final evaluation."""
from lionflow.smk import setup_logging
from lionflow.summary import summarize

log = setup_logging(snakemake)
summary = summarize(snakemake.input, snakemake.output.summary, run=snakemake.config["run"],
                    threshold=snakemake.params.threshold, min_order_agreement=snakemake.params.min_order_agreement)
for it in summary["iterations"]:
    if it["referee"]["warning"]:
        log.warning("iteration %d: %s", it["iteration"], it["referee"]["warning"])
log.info("summary written: %d iterations, final eval %s", len(summary["iterations"]), summary["final_eval"])
