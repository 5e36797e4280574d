# lionflow: adversarial distillation (Lion, EMNLP 2023) as files-to-files stages.
# One iteration = imitation -> discrimination -> generation; then evaluation (lm-eval and the
# judge) of every checkpoint, and the report. `snakemake export` writes the distilled dataset and the
# final student with their cards; the ablation has its own entry point, experiment.smk.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


report: "resources/report/workflow.rst"


include: "rules/loop.smk"
include: "rules/export.smk"


localrules:
    all,


rule all:
    default_target: True  # the stage rules, included above, come first
    input:
        summary=f"{RESULTS}/summary.json",
        report=f"{RESULTS}/report.md",
        plots=rules.plot_run.output,
        tables=rules.write_report_tables.output.tables,
