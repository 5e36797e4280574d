"""The paper-style tables of a run: results/<run>/report.md and an HTML page for Snakemake's report."""

from lionflow.artifacts import atomic_write, read_json
from lionflow.provenance import describe
from lionflow.report import (
    LINEAGE_TEXT,
    REFEREE_TEXT,
    category_table,
    html,
    html_page,
    lineage_table,
    loop_table,
    open_ended_table,
    reasoning_table,
    referee_table,
    referee_warnings,
    requests_table,
    run_report_markdown,
)
from lionflow.smk import setup_logging

log = setup_logging(snakemake)
summary = read_json(snakemake.input.summary, "summary")
atomic_write(snakemake.output.markdown, run_report_markdown(summary))
sections = [("Provenance", describe(summary["provenance"]), "")]
judged = [it for it in summary["iterations"] if it.get("judge")]
if judged:
    final = judged[-1]["judge"]
    sections += [
        ("Open-ended evaluation (relative score, %)",
         f"Student total / reference total of the judge's 1-10 scores (judge {final['judge_model']}, reference "
         f"{final['reference_model']}), with the reference's answer shown first, with the student's shown first, and "
         "their mean. Questions not scored in an order are left out of both and counted as failed.",
         html(open_ended_table(summary))),
        (f"Open-ended evaluation per category, {final['checkpoint']}", "", html(category_table(final))),
    ]
sections += [
    ("Reasoning (lm-eval, %)", "Main metric per task, zero-shot, and the unweighted average.",
     html(reasoning_table(summary))),
    ("The loop", "Pools, hard/easy split, mean referee scores and LLM requests per iteration.", html(loop_table(summary))),
    ("Referee reliability", " ".join([REFEREE_TEXT, *(f"Warning, {w}." for w in referee_warnings(summary))]),
     html(referee_table(summary))),
    ("Hard instructions by seed family", LINEAGE_TEXT, html(lineage_table(summary))),
    ("LLM requests per stage", "Over all iterations; tokens stand in for cost.", html(requests_table(summary))),
]
atomic_write(snakemake.output.tables, html_page(f"lionflow run {summary['run']}", sections))
log.info("report tables written: %s, %s", snakemake.output.markdown, snakemake.output.tables)
