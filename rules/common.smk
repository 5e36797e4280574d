# Config validation (first thing), paths and input functions shared by the stage rules.
import json
import sys
from pathlib import Path

from snakemake.utils import validate

from lionflow.layout import checkpoint, run_dir, student_dir
from lionflow.smk import role_identity

validate(config, "../config/schema.yaml")


include: "shell.smk"


# Every endpoint, key, model and the base student checked before any job runs (the jobs of a
# cluster run parse this file again: only the main process checks).
if workflow.is_main_process:
    from lionflow.preflight import preflight

    preflight(config)

RESULTS = run_dir(config["run"])
ITER = f"{RESULTS}/iter{{k}}"
N_ITERATIONS = config["iterations"]
API_RULES_LOCAL = config["cluster"]["api_rules_local"]
# Threads of a torch job (training, student generation, lm-eval). Snakemake lowers it to the
# cores available, so on a small machine these jobs do not run side by side and fight for cores.
TORCH_THREADS = 4


wildcard_constraints:
    k=r"[1-9][0-9]*",
    later_k=r"[2-9]|[1-9][0-9]+",
    pool="train|cache",
    checkpoint=r"base|iter[1-9][0-9]*",


def student_init(wildcards):
    """Iteration 1 (or student.init=base) starts from the base model, later ones from the last checkpoint."""
    previous = (
        0 if config["student"]["init"] == "base" else int(wildcards.k) - 1
    )  # 0: the base student
    return student_dir(config["run"], checkpoint(previous))


def previous_iteration(wildcards, name):
    return f"{RESULTS}/iter{int(wildcards.later_k) - 1}/{name}"


def checkpoint_dir(wildcards):
    return student_dir(config["run"], wildcards.checkpoint)


def lm_eval_task_files(wildcards):
    """The task YAMLs and data under eval.lm_eval.include_path (inputs, so edits rerun evaluation)."""
    root = Path(config["eval"]["lm_eval"]["include_path"])
    return sorted(
        str(p) for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts
    )


def decontamination_sets():
    """What generated instructions are decontaminated against (generation.decontamination): the lm-eval
    tasks and the judge's questions the run evaluates on; None when the check or the judge is off.
    """
    on = config["generation"]["decontamination"]["enabled"]
    lm_eval, judge = config["eval"]["lm_eval"], config["eval"]["judge"]
    return {
        "lm_eval_tasks": lm_eval["tasks"] if on else None,
        "include_path": lm_eval["include_path"],
        "judge_questions": judge["questions"] if on and judge["enabled"] else None,
    }


def decontamination_files(wildcards):
    """The files behind decontamination_sets (inputs of generation, so that an edit reruns it)."""
    sets = decontamination_sets()
    return (lm_eval_task_files(wildcards) if sets["lm_eval_tasks"] else []) + (
        [sets["judge_questions"]] if sets["judge_questions"] else []
    )


def iteration_files(name):
    return expand(f"{ITER}/{name}", k=range(1, N_ITERATIONS + 1))


def accelerate_launch_args(wildcards, input, resources):
    """One process per GPU of the job (the training shards the student over them with FSDP2,
    student.train.fsdp); one plain process on a CPU-only job."""
    if resources.gpu > 0:
        return (
            f"--config_file {input.accelerate_config} --num_processes {resources.gpu}"
        )
    return "--num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no"
