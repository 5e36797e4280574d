# The ablation: adversarial vs uniform generation over experiment.seeds. Each arm is a whole run
# of this workflow under its own run name and config (a nested Snakemake call, so the stage rules
# stay as they are); the arms' summaries are then compared, paired by seed.
from lionflow.ablation import STRATEGIES, arm_config, arm_run_name

EXPERIMENT = config["experiment"]
EXPERIMENT_DIR = f"results/{EXPERIMENT['name']}"


wildcard_constraints:
    strategy="|".join(STRATEGIES),
    arm_seed=r"[0-9]+",


rule run_experiment_arm:
    output:
        config=f"{EXPERIMENT_DIR}/arms/{{strategy}}-s{{arm_seed}}.yaml",
        summary=f"{EXPERIMENT_DIR}/arms/{{strategy}}-s{{arm_seed}}.json",
    log:
        f"logs/{EXPERIMENT['name']}/run_experiment_arm_{{strategy}}-s{{arm_seed}}.log",
    localrule: True  # orchestrates a nested Snakemake run of the arm on this host
    # The arm's own Snakemake schedules its jobs on these cores; Snakemake caps the number at the
    # cores it was given, so arms run one after another with all of them.
    threads: 1024
    params:
        config=lambda wc: arm_config(config, wc.strategy, int(wc.arm_seed)),
        run=lambda wc: arm_run_name(EXPERIMENT["name"], wc.strategy, int(wc.arm_seed)),
        snakefile=workflow.main_snakefile,
    script:
        "../workflow/scripts/run_experiment_arm.py"


rule tabulate_ablation:
    input:
        arms=expand(
            f"{EXPERIMENT_DIR}/arms/{{strategy}}-s{{arm_seed}}.json",
            strategy=STRATEGIES,
            arm_seed=EXPERIMENT["seeds"],
        ),
    output:
        ablation=f"{EXPERIMENT_DIR}/ablation.json",
        markdown=f"{EXPERIMENT_DIR}/ablation.md",
        table=report(
            f"{EXPERIMENT_DIR}/ablation.html",
            caption="../resources/report/ablation.rst",
            category="Ablation",
        ),
        plot=report(
            f"{EXPERIMENT_DIR}/ablation.png",
            caption="../resources/report/ablation.rst",
            category="Ablation",
        ),
    log:
        f"logs/{EXPERIMENT['name']}/tabulate_ablation.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    params:
        seeds=EXPERIMENT["seeds"],
        confidence=EXPERIMENT["confidence"],
    script:
        "../workflow/scripts/tabulate_ablation.py"


rule experiment:
    """Target: run both arms over the seeds and print the ablation table."""
    input:
        markdown=f"{EXPERIMENT_DIR}/ablation.md",
    log:
        f"logs/{EXPERIMENT['name']}/experiment.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    shell:
        "cat {input.markdown} | tee {log}"
