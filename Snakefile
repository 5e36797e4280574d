# lionflow: adversarial distillation (Lion, EMNLP 2023) as files-to-files stages.
# One iteration = imitation -> discrimination -> generation; after the last, evaluation.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config/config.yaml"


include: "rules/common.smk"
include: "rules/imitation.smk"
include: "rules/discrimination.smk"
include: "rules/generation.smk"
include: "rules/evaluation.smk"


localrules:
    all,


rule all:
    input:
        summary=f"{RESULTS}/summary.json",
