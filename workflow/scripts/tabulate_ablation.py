"""The ablation table: per-arm means and the adversarial - uniform difference with its interval."""
import re
from pathlib import Path

from lionflow.ablation import compare, requests_table, table
from lionflow.artifacts import atomic_write, read_json, write_json
from lionflow.report import html, html_page, markdown, plot_ablation
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
summaries = {}
for path in snakemake.input.arms:
    strategy, seed = re.fullmatch(r"(\w+)-s(\d+)\.json", Path(path).name).groups()
    summaries[strategy, int(seed)] = read_json(path, "summary")
ablation = compare(summaries, snakemake.params.seeds, snakemake.params.confidence)
write_json(snakemake.output.ablation, ablation, "ablation")
n = len(ablation["seeds"])
intro = (f"Adversarial vs uniform generation, paired by seed over seeds {ablation['seeds']}: mean of each arm, mean "
         f"difference adversarial - uniform and its {100 * ablation['confidence']:g}% t interval (df = {n - 1}). "
         "Iteration 1 precedes any generation: with the same seed both arms train the same student, so its difference "
         "should be 0.")
budget = "Mean LLM requests per stage and arm over all iterations (the budget the arms share)."
atomic_write(snakemake.output.markdown,
             f"# Ablation\n\n{intro}\n\n{markdown(table(ablation))}\n\n{budget}\n\n{markdown(requests_table(ablation))}\n")
atomic_write(snakemake.output.table, html_page("Ablation: adversarial vs uniform generation", [
    ("Outcomes", intro, html(table(ablation))), ("Budget", budget, html(requests_table(ablation)))]))
plot_ablation(ablation, snakemake.output.plot)
log.info("ablation over %d seeds: %d rows", n, len(ablation["rows"]))
