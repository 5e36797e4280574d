"""The run's file layout, in one place: where a run (results/<run>/) and the experiment keep their
artifacts, the per-iteration LLM stages and the generation strategies. The rules (rules/common.smk,
rules/experiment.smk), the scripts and the summary, report, ablation, lineage and preflight modules
name paths through it, relative to the working directory as Snakemake does."""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = "results"
LLM_STAGES = ("teacher_train", "teacher_cache", "referee", "generator")  # an iteration's LLM stages, in loop order
STRATEGIES = ("adversarial", "uniform")  # generation.strategy: new instructions modelled on hard or on random ones


def run_dir(run: str) -> str:
    """results/<run>: everything one run of the loop writes."""
    return f"{RESULTS}/{run}"


def checkpoint(k: int) -> str:
    """The name of iteration k's student in evaluation files: base (k = 0, before training) or iter<k>."""
    return "base" if k == 0 else f"iter{k}"


def student_dir(run: str, checkpoint_name: str) -> str:
    """A checkpoint's directory: the base student or iteration k's trained one."""
    if checkpoint_name == "base":
        return f"{run_dir(run)}/base_student"
    return f"{run_dir(run)}/{checkpoint_name}/student"


def lm_eval_file(run: str, checkpoint_name: str) -> str:
    """A checkpoint's lm-eval results (scores and per-item records)."""
    return f"{run_dir(run)}/eval/{checkpoint_name}_lm_eval.json"


def iteration_file(run: str, k: int, name: str) -> str:
    """A file of iteration k, e.g. iteration_file(run, 2, "hard.jsonl")."""
    return f"{run_dir(run)}/iter{k}/{name}"


def iteration_dirs(run_path) -> list[tuple[int, Path]]:
    """The iter<k>/ folders of a run's directory (any path, e.g. a copied results/<run>), as (k, path) in order."""
    found = ((re.fullmatch(r"iter(\d+)", p.name), p) for p in Path(run_path).glob("iter*") if p.is_dir())
    return sorted((int(m.group(1)), p) for m, p in found if m)


def ledger_dir(config: dict) -> str:
    """Where a run records its spending: llm.ledger_dir when set (a ledger shared with other runs),
    else results/<run>/ledger (llm.budget_usd caps this run alone). Resolved where a client is built;
    the config itself keeps null, so an experiment's arms each get their own."""
    return config["llm"]["ledger_dir"] or f"{run_dir(config['run'])}/ledger"


def experiment_dir(experiment: str) -> str:
    """results/<experiment.name>: the ablation's tables and plots."""
    return f"{RESULTS}/{experiment}"


def arm_run_name(experiment: str, strategy: str, seed: int) -> str:
    """The run of one arm of the experiment (a strategy and a seed)."""
    return f"{experiment}-{strategy}-s{seed}"


def shared_run_name(experiment: str, seed: int) -> str:
    """The run that computes iteration 1 once per seed for both arms."""
    return f"{experiment}-s{seed}"
