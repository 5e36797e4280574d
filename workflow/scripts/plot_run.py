"""Per-iteration plots of a run: hard fraction, referee scores, score gaps, evaluations, requests."""
import polars as pl

from lionflow.artifacts import read_json
from lionflow.frames import scan_frame
from lionflow.report import (
                             plot_eval_by_checkpoint,
                             plot_hard_fraction,
                             plot_referee_scores,
                             plot_requests_per_stage,
                             plot_score_gaps,
)
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
summary = read_json(snakemake.input.summary, "summary")
gaps = {k: scan_frame(path, "referee_score").filter(~pl.col("failed")).select("gap").collect()["gap"].to_list()
        for k, path in enumerate(snakemake.input.scores, start=1)}  # in iteration order
plot_hard_fraction(summary, snakemake.output.hard_fraction)
plot_referee_scores(summary, snakemake.output.referee_scores)
plot_score_gaps(gaps, snakemake.params.threshold, snakemake.output.score_gaps)
plot_eval_by_checkpoint(summary, snakemake.output.eval_metrics)
plot_requests_per_stage(summary, snakemake.output.requests)
log.info("plots written for %d iterations", len(summary["iterations"]))
