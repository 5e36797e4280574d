"""The run summary (schema `summary`): per-iteration pool sizes, split, scores, LLM statistics, evals."""

from __future__ import annotations

import re
import statistics
from pathlib import Path

from .artifacts import read_json, read_jsonl, write_json


def _mean(values: list[float]) -> float | None:
    return round(statistics.fmean(values), 4) if values else None


def iteration_summary(k: int, *, train_pool, cache_pool, scores, hard, easy, new_hard, new_easy, llm: dict) -> dict:
    scored = [s for s in scores if not s["failed"]]
    return {
        "iteration": k, "train_pool_size": len(train_pool), "cache_pool_size": len(cache_pool),
        "n_hard": len(hard), "n_easy": len(easy), "new_hard": len(new_hard), "new_easy": len(new_easy),
        "teacher_score_mean": _mean([s["teacher_score"] for s in scored]),
        "student_score_mean": _mean([s["student_score"] for s in scored]),
        "referee_failures": len(scores) - len(scored),
        "llm": llm,
    }


def summarize(inputs, out_path: str, run: str) -> dict:
    """`inputs`: Snakemake's named input lists (one path per iteration, in iteration order)."""
    stats: dict[int, dict] = {}
    for path in inputs.llm_stats:
        k = int(re.search(r"iter(\d+)", str(path)).group(1))
        stats.setdefault(k, {})[Path(path).stem] = read_json(path, "llm_stats")
    iterations = []
    for i in range(len(inputs.train_pools)):
        iterations.append(iteration_summary(
            i + 1,
            train_pool=read_jsonl(inputs.train_pools[i], "instruction"),
            cache_pool=read_jsonl(inputs.cache_pools[i], "instruction"),
            scores=read_jsonl(inputs.scores[i], "referee_score"),
            hard=read_jsonl(inputs.hard[i], "scored_instruction"),
            easy=read_jsonl(inputs.easy[i], "scored_instruction"),
            new_hard=read_jsonl(inputs.new_hard[i], "instruction"),
            new_easy=read_jsonl(inputs.new_easy[i], "instruction"),
            llm=stats.get(i + 1, {}),
        ))
    summary = {
        "run": run,
        "iterations": iterations,
        "base_eval": read_json(inputs.base_eval, "eval_metrics")["metrics"],
        "final_eval": read_json(inputs.final_eval, "eval_metrics")["metrics"],
    }
    write_json(out_path, summary, "summary")
    return summary
