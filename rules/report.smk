# The report: per-iteration plots and the paper-style tables of a run, for
# `snakemake --report report.html` (Snakemake's own report) and results/<run>/report.md.

REPORT_DIR = f"{RESULTS}/report"


rule plot_run:
    input:
        summary=f"{RESULTS}/summary.json",
        scores=iteration_files("referee_scores.jsonl"),
    output:
        hard_fraction=report(
            f"{REPORT_DIR}/hard_fraction.png",
            caption="../resources/report/hard_fraction.rst",
            category="Loop",
        ),
        referee_scores=report(
            f"{REPORT_DIR}/referee_scores.png",
            caption="../resources/report/referee_scores.rst",
            category="Loop",
        ),
        score_gaps=report(
            f"{REPORT_DIR}/score_gaps.png",
            caption="../resources/report/score_gaps.rst",
            category="Loop",
        ),
        eval_metrics=report(
            f"{REPORT_DIR}/eval_by_checkpoint.png",
            caption="../resources/report/eval_by_checkpoint.rst",
            category="Evaluation",
        ),
        requests=report(
            f"{REPORT_DIR}/requests_per_stage.png",
            caption="../resources/report/requests_per_stage.rst",
            category="Cost",
        ),
    log:
        f"logs/{config['run']}/report/plot_run.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    params:
        threshold=config["discrimination"]["threshold"],
    script:
        "../workflow/scripts/plot_run.py"


rule write_report_tables:
    input:
        summary=f"{RESULTS}/summary.json",
    output:
        markdown=f"{RESULTS}/report.md",
        tables=report(
            f"{REPORT_DIR}/tables.html",
            caption="../resources/report/tables.rst",
            category="Tables",
        ),
    log:
        f"logs/{config['run']}/report/write_report_tables.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    script:
        "../workflow/scripts/write_report_tables.py"
