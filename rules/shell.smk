# Names the stage rules' shell commands use that are not rule params, because editing them changes no
# output. Snakemake formats every shell command, a module's too, with the entry point's globals, so
# each entry point (Snakefile via common.smk, experiment.smk) includes this file.
import sys

# Shell rules use the interpreter that runs Snakemake (the project's venv), whatever PATH holds.
PYTHON = sys.executable
# How often training saves its resumable state (the workflow's, for every arm of the experiment).
CHECKPOINT_EVERY_STEPS = config["student"]["train"]["checkpoint_every_steps"]
