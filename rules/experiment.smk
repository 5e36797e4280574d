# The ablation: adversarial vs uniform generation over experiment.seeds, in this one DAG (entry
# point: experiment.smk). Every arm is a whole run of the loop (rules/loop.smk loaded as a Snakemake
# module with the arm's config, its rules named <strategy>_s<seed>_<rule>), so a cluster profile
# schedules each arm's jobs with their resources. Iteration 1 is computed once per seed by a shared run (module shared_s<seed>, iteration
# 1 only) and copied into both arms; the arms' summaries are then compared, paired by seed.
from lionflow.ablation import arm_config, arm_files, shared_files
from lionflow.layout import (
    STRATEGIES,
    arm_run_name,
    experiment_dir,
    run_dir,
    shared_run_name,
)
from lionflow.smk import share_rule_settings

EXPERIMENT = config["experiment"]
# An arm's config is the validated workflow config with the experiment's overrides merged in, then the
# arm's run name, seed and strategy: validated once here, so that the modules skip it (each validation
# reads the schema again; a cluster job parses this file too).
validate(
    arm_config(config, STRATEGIES[0], EXPERIMENT["seeds"][0]), "../config/schema.yaml"
)
EXPERIMENT_DIR = experiment_dir(EXPERIMENT["name"])
# Each arm: its strategy, seed and results directory; every arm runs the same number of iterations.
ARMS = [
    {
        "strategy": strategy,
        "seed": seed,
        "run": arm_run_name(EXPERIMENT["name"], strategy, seed),
    }
    for seed in EXPERIMENT["seeds"]
    for strategy in STRATEGIES
]
ARM_ITERATIONS = range(
    1, arm_config(config, STRATEGIES[0], EXPERIMENT["seeds"][0])["iterations"] + 1
)
for ARM_SEED in EXPERIMENT["seeds"]:
    SHARED_MODULE = f"shared_s{ARM_SEED}"
    SHARED_PREFIX = f"{SHARED_MODULE}_"
    SHARED_RESULTS = run_dir(shared_run_name(EXPERIMENT["name"], ARM_SEED))

    module:
        name: SHARED_MODULE
        snakefile:
            "loop.smk"
        config:
            arm_config(config, None, ARM_SEED)
        skip_validation:
            True

    use rule * from SHARED_MODULE as SHARED_PREFIX*

    for ARM_STRATEGY in STRATEGIES:
        ARM_MODULE = f"{ARM_STRATEGY}_s{ARM_SEED}"
        ARM_PREFIX = f"{ARM_MODULE}_"
        ARM_CONFIG = arm_config(config, ARM_STRATEGY, ARM_SEED)

        module:
            name: ARM_MODULE
            snakefile:
                "loop.smk"
            config:
                ARM_CONFIG
            skip_validation:
                True

        # The arm's pools, base student and judge reference come from the shared run (below).
        use rule * from ARM_MODULE exclude init_pools, build_base_student, answer_questions_with_reference as ARM_PREFIX*

        # Both arms of a seed take iteration 1 from the shared run: this rule makes those files, and
        # wins over the arm's own rules that could make them too (the ruleorder below).
        ARM_FILES, ARM_DIRECTORIES = shared_files(ARM_CONFIG)

        rule:
            name:
                f"{ARM_PREFIX}share_iteration1"
            input:
                [f"{SHARED_RESULTS}/{p}" for p in ARM_FILES + ARM_DIRECTORIES],
            output:
                [f"{run_dir(ARM_CONFIG['run'])}/{p}" for p in ARM_FILES]
                + [
                    directory(f"{run_dir(ARM_CONFIG['run'])}/{p}")
                    for p in ARM_DIRECTORIES
                ],
            log:
                f"logs/{ARM_CONFIG['run']}/share_iteration1.log",
            localrule: True  # copies: not worth a cluster job
            script:
                "../workflow/scripts/share_iteration.py"

        # `ruleorder: <arm>_share_iteration1 > <arm>_<rule>` for each of the arm's rules (names built
        # in this loop, so the statement's own function: what the keyword compiles to).
        for ARM_RULE in [
            r.name for r in workflow.rules if r.name.startswith(ARM_PREFIX)
        ]:
            if ARM_RULE != f"{ARM_PREFIX}share_iteration1":
                workflow.ruleorder(f"{ARM_PREFIX}share_iteration1", ARM_RULE)


# --set-resources / --set-threads (the profiles) name the stage rules: the modules' copies get the same.
share_rule_settings(
    workflow,
    [
        f"{module}_s{seed}_"
        for seed in EXPERIMENT["seeds"]
        for module in ("shared", *STRATEGIES)
    ],
)


rule tabulate_ablation:
    input:
        # each arm's summary, the per-item lm-eval results of every checkpoint (the base student's
        # too) and each iteration's cache pool, hard split and new instructions (lionflow.ablation.arm_files)
        [
            path
            for arm in ARMS
            for paths in arm_files(arm["run"], ARM_ITERATIONS).values()
            for path in paths
        ],
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
        family_plot=report(
            f"{EXPERIMENT_DIR}/ablation_by_family.png",
            caption="../resources/report/ablation_by_family.rst",
            category="Ablation",
        ),
    log:
        f"logs/{EXPERIMENT['name']}/tabulate_ablation.log",
    localrule: True  # seconds of bookkeeping: not worth a cluster job
    params:
        arms=ARMS,
        iterations=list(ARM_ITERATIONS),
        seeds=EXPERIMENT["seeds"],
        confidence=EXPERIMENT["confidence"],
        effect_of_interest=EXPERIMENT["effect_of_interest"],
    script:
        "../workflow/scripts/tabulate_ablation.py"
