"""The ablation: adversarial vs uniform generation at the same LLM budget, over several seeds.

Each arm is a whole run of the loop (results/<experiment>-<strategy>-s<seed>/) that differs from
the other arm only in `generation.strategy`. Arms with the same seed share everything up to the
first generation (same seed pool, same student initialisation and training seed), so the
comparison is paired by seed: for each metric and iteration, the difference
    d_s = adversarial_s - uniform_s
is averaged over the seeds, with a two-sided t interval (n - 1 degrees of freedom).
"""

from __future__ import annotations

import copy
import math
import statistics

from scipy import stats

from .evaluation import group_label
from .summary import stage_totals

STRATEGIES = ("adversarial", "uniform")


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(mean, low, high): mean +- t_{(1+c)/2, n-1} * s / sqrt(n), s the sample standard deviation."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {n}")
    mean = statistics.fmean(values)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def deep_merge(base: dict, overrides: dict) -> dict:
    """A copy of `base` with `overrides` merged in, recursively for nested dicts (like Snakemake)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def arm_run_name(experiment: str, strategy: str, seed: int) -> str:
    return f"{experiment}-{strategy}-s{seed}"


def arm_config(config: dict, strategy: str, seed: int) -> dict:
    """The full config of one arm: the workflow's, the experiment's overrides, then the arm's own keys."""
    experiment = config["experiment"]
    base = {k: v for k, v in config.items() if k != "experiment"}  # editing the experiment reruns no arm
    return deep_merge(deep_merge(base, experiment["overrides"]),
                      {"run": arm_run_name(experiment["name"], strategy, seed), "seed": seed,
                       "generation": {"strategy": strategy}})


def outcome_metrics(summary: dict) -> dict[tuple[str, int], float]:
    """(metric, iteration) -> value: lm-eval per task and averaged, and the judge's relative score."""
    out = {}
    for it in summary["iterations"]:
        k = it["iteration"]
        groups = summary.get("lm_eval_groups", [])
        for task, value in sorted(it["eval"].items()):
            name = group_label(task, groups) if task in groups else task
            out[f"lm-eval {name} (%)", k] = 100 * value
        judge = it.get("judge")
        if judge and judge["overall"]["mean_relative"] is not None:
            out["open-ended relative score (%)", k] = judge["overall"]["mean_relative"]
    return out


def budget(summary: dict) -> dict[str, int]:
    """LLM requests per stage over all iterations (paid + cached: the calls an API would bill)."""
    return {stage: total["requests"] for stage, total in stage_totals(summary).items()}


def compare(summaries: dict[tuple[str, int], dict], seeds: list[int], confidence: float = 0.95) -> dict:
    """The ablation table (schema `ablation`) from each arm's run summary, keyed (strategy, seed)."""
    metrics = {key: outcome_metrics(s) for key, s in summaries.items()}
    shared = set.intersection(*(set(m) for m in metrics.values()))
    rows = []
    for metric, k in sorted(shared, key=lambda mk: (mk[1], mk[0])):
        arms = {st: [metrics[st, seed][metric, k] for seed in seeds] for st in STRATEGIES}
        diffs = [a - u for a, u in zip(arms["adversarial"], arms["uniform"])]
        mean, low, high = t_interval(diffs, confidence)
        rows.append({"metric": metric, "iteration": k,
                     **{st: {"mean": statistics.fmean(v), "values": v} for st, v in arms.items()},
                     "difference": {"mean": mean, "ci_low": low, "ci_high": high, "values": diffs}})
    budgets = {key: budget(s) for key, s in summaries.items()}
    stages = sorted(set.union(*(set(b) for b in budgets.values())))
    requests = [{"stage": stage, **{st: statistics.fmean(budgets[st, seed].get(stage, 0) for seed in seeds)
                                    for st in STRATEGIES}} for stage in stages]
    return {"seeds": list(seeds), "confidence": confidence, "rows": rows, "requests": requests}


def verdict(row: dict) -> str:
    d = row["difference"]
    if d["ci_low"] > 0:
        return "adversarial better"
    if d["ci_high"] < 0:
        return "uniform better"
    return "no significant difference"


def table(ablation: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the ablation: per-arm means and the paired difference with its interval."""
    level = f"{100 * ablation['confidence']:g}% CI"
    rows = [[r["metric"], str(r["iteration"]), f"{r['adversarial']['mean']:.2f}", f"{r['uniform']['mean']:.2f}",
             f"{r['difference']['mean']:+.2f}", f"[{r['difference']['ci_low']:+.2f}, {r['difference']['ci_high']:+.2f}]",
             verdict(r)] for r in ablation["rows"]]
    return ["metric", "iter", "adversarial", "uniform", "adv - uni", level, "verdict"], rows


def requests_table(ablation: dict) -> tuple[list[str], list[list[str]]]:
    rows = [[r["stage"], f"{r['adversarial']:.1f}", f"{r['uniform']:.1f}"] for r in ablation["requests"]]
    return ["stage", "adversarial requests", "uniform requests"], rows
