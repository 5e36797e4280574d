# One run of the loop under one config (results/<run>/): config validation, the stages, both
# evaluations and the run's report. The Snakefile includes it for the configured run; the ablation
# (experiment.smk) loads it as a Snakemake module once per arm and seed, each with its own config.


include: "common.smk"
include: "imitation.smk"
include: "discrimination.smk"
include: "generation.smk"
include: "judge.smk"
include: "evaluation.smk"
include: "report.smk"
