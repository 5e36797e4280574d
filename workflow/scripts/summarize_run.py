"""results/<run>/summary.json: per-iteration counts and scores, base and final evaluation."""
from pathlib import Path

from lionflow.provenance import describe
from lionflow.smk import setup_logging
from lionflow.summary import summarize

log = setup_logging(snakemake)
# the project's checkout: this script is workflow/scripts/ in it
summary = summarize(snakemake.input, snakemake.output.summary, run=snakemake.config["run"], config=snakemake.config,
                    root=Path(__file__).resolve().parents[2], threshold=snakemake.params.threshold,
                    min_order_agreement=snakemake.params.min_order_agreement,
                    hard_fraction_band=snakemake.params.hard_fraction_band)
for it in summary["iterations"]:
    for warning in (it["split_warning"], it["referee"]["warning"]):
        if warning:
            log.warning("iteration %d: %s", it["iteration"], warning)
log.info("summary written: %d iterations, final eval %s; %s", len(summary["iterations"]), summary["final_eval"],
         describe(summary["provenance"]))
