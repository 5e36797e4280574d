# The ablation's entry point: adversarial vs uniform generation over experiment.seeds, every arm a
# whole run of the loop (rules/experiment.smk). A file of its own, so that the main run's parse
# (Snakefile) neither loads nor preflights the arms' module copies (5 seeds x 3 runs by default):
#   snakemake -s experiment.smk --profile profiles/local     # or profiles/slurm
from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, "config/schema.yaml")


include: "rules/shell.smk"


report: "resources/report/workflow.rst"


include: "rules/experiment.smk"


rule experiment:
    """Target: run both arms over the seeds and print the ablation table."""
    default_target: True  # the arms' rules, included above, come first
    input:
        markdown=f"{EXPERIMENT_DIR}/ablation.md",
    log:
        f"logs/{EXPERIMENT['name']}/experiment.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    shell:
        "cat {input.markdown} | tee {log}"
