"""The ablation: adversarial vs uniform generation at the same LLM budget, over several seeds.

Each arm is a whole run of the loop (results/<experiment>-<strategy>-s<seed>/) that differs from
the other arm only in `generation.strategy`. Arms with the same seed are identical up to the first
generation (same seed pool, base student, iteration-1 teacher answers, training, student answers,
referee scores and split, and evaluations of the base and iteration-1 checkpoints): those are
computed once per seed in a shared run (results/<experiment>-s<seed>/, iteration 1 only) and copied
into both arms (`SHARED_FILES`, `SHARED_DIRECTORIES`). The comparison is paired by seed: for each
metric and iteration, the difference
    d_s = adversarial_s - uniform_s
is averaged over the n seeds, with a two-sided t interval (n - 1 degrees of freedom), and the
minimal detectable difference (MDD) of that paired design is reported next to it:
    MDD = (t_{1-a/2, n-1} + t_{power, n-1}) * s_d / sqrt(n),   a = 1 - confidence, power = 0.8,
s_d the standard deviation of the d_s. A true difference of at least MDD is found (the interval
excludes 0) with probability `power`, if the seeds' spread is s_d; an interval that contains 0 with
an MDD larger than the effect one cares about (experiment.effect_of_interest) says "too little
power", not "no effect" (`verdict`).

Where the held-out lm-eval data gives each item a `family` (and `level`), as the oracle tasks do,
the same comparison is made per task and family, and per task, family and level
(`compare_by_family`); `composition` counts the hard split and the new instructions by the oracle
task family and level they parse as.
"""

from __future__ import annotations

import copy
import math
import statistics

from .evaluation import group_label
from .layout import STRATEGIES, arm_run_name, checkpoint, iteration_file, lm_eval_file, run_dir, shared_run_name
from .lineage import family_level

# scipy and the summary (polars) are imported where they are used: the workflow imports this module
# when it parses the experiment, in every job of a cluster run too.

# The sets whose family x level mix the ablation counts: name -> (file stem in iter<k>/, schema)
SETS = {"cache pool": ("cache_pool", "instruction"), "hard split": ("hard", "scored_instruction"),
        "new hard": ("new_hard", "instruction"), "new easy": ("new_easy", "instruction")}


def t_interval(values: list[float], confidence: float) -> tuple[float, float, float]:
    """(mean, low, high): mean +- t_{(1+c)/2, n-1} * s / sqrt(n), s the sample standard deviation."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a t interval needs at least 2 values, got {n}")
    from scipy import stats

    mean = statistics.fmean(values)
    half = stats.t.ppf((1 + confidence) / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return mean, mean - half, mean + half


def mdd(values: list[float], confidence: float, power: float = 0.8) -> float:
    """Minimal detectable difference of the paired t test on `values` (the per-seed differences):
    (t_{(1+c)/2, n-1} + t_{power, n-1}) * s / sqrt(n), s the sample standard deviation."""
    n = len(values)
    if n < 2:
        raise ValueError(f"a minimal detectable difference needs at least 2 values, got {n}")
    from scipy import stats

    return float((stats.t.ppf((1 + confidence) / 2, n - 1) + stats.t.ppf(power, n - 1))
                 * statistics.stdev(values) / math.sqrt(n))


def deep_merge(base: dict, overrides: dict) -> dict:
    """A copy of `base` with `overrides` merged in, recursively for nested dicts (like Snakemake)."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def arm_files(run: str, iterations) -> dict[str, list[str]]:
    """What the ablation reads from one arm's run: its summary, the per-item lm-eval results of every
    checkpoint (0: the base student) and each iteration's SETS, in that order."""
    return {"summary": [f"{run_dir(run)}/summary.json"],
            "lm_eval": [lm_eval_file(run, checkpoint(k)) for k in [0, *iterations]],
            "sets": [iteration_file(run, k, f"{stem}.jsonl") for k in iterations for stem, _ in SETS.values()]}


def arm_config(config: dict, strategy: str | None, seed: int) -> dict:
    """The full config of one arm: the workflow's, the experiment's overrides, then the arm's own keys.

    strategy None: the seed's shared run, which computes iteration 1 for both arms (it never generates).
    """
    experiment = config["experiment"]
    base = {k: v for k, v in config.items() if k != "experiment"}  # editing the experiment reruns no arm
    own = ({"run": shared_run_name(experiment["name"], seed), "seed": seed} if strategy is None else
           {"run": arm_run_name(experiment["name"], strategy, seed), "seed": seed, "generation": {"strategy": strategy}})
    return deep_merge(deep_merge(base, experiment["overrides"]), own)


# What the arms of a seed share, relative to results/<run>/: iteration 1 up to the hard/easy split
# and the evaluations of the base and iteration-1 checkpoints. Generation onwards is the arm's own.
SHARED_DIRECTORIES = ("base_student", "iter1/student")
SHARED_FILES = tuple(f"iter1/{name}" for name in (
    "train_pool.jsonl", "cache_pool.jsonl", "teacher_train.jsonl", "teacher_cache.jsonl",
    "llm_stats/teacher_train.json", "llm_stats/teacher_cache.json", "student_cache.jsonl",
    "referee_scores.jsonl", "llm_stats/referee.json", "hard.jsonl", "easy.jsonl")) + tuple(
    f"eval/{c}{suffix}" for c in ("base", "iter1") for suffix in (".json", "_lm_eval.json"))
SHARED_JUDGE_FILES = ("judge/reference_answers.jsonl", "judge/llm_stats/reference.json") + tuple(
    f"judge/{c}{suffix}" for c in ("base", "iter1")
    for suffix in ("_answers.jsonl", "_scores.jsonl", ".json")) + ("judge/llm_stats/judge_base.json",
                                                                   "judge/llm_stats/judge_iter1.json")


def shared_files(config: dict) -> tuple[list[str], list[str]]:
    """(files, directories) an arm takes from its seed's shared run (`config`: the arm's, defaults filled
    in); the judge's files only when it is on."""
    judge = list(SHARED_JUDGE_FILES) if config["eval"]["judge"]["enabled"] else []
    return list(SHARED_FILES) + judge, list(SHARED_DIRECTORIES)


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
    from .summary import stage_totals

    return {stage: total["requests"] for stage, total in stage_totals(summary).items()}


def _rows(metrics: dict[tuple[str, int], dict], seeds: list[int], confidence: float) -> list[dict]:
    """One row per (metric, iteration) every arm has: arm means and the paired difference."""
    shared = set.intersection(*(set(m) for m in metrics.values()))
    rows = []
    for metric, k in sorted(shared, key=lambda mk: (mk[1], mk[0])):
        arms = {st: [metrics[st, seed][metric, k] for seed in seeds] for st in STRATEGIES}
        diffs = [a - u for a, u in zip(arms["adversarial"], arms["uniform"])]
        mean, low, high = t_interval(diffs, confidence)
        rows.append({"metric": metric, "iteration": k,
                     **{st: {"mean": statistics.fmean(v), "values": v} for st, v in arms.items()},
                     "difference": {"mean": mean, "ci_low": low, "ci_high": high, "mdd": mdd(diffs, confidence),
                                    "values": diffs}})
    return rows


def family_metrics(items: dict[str, list[dict]]) -> dict[str, tuple[float, int]]:
    """metric -> (mean score in %, items) per task and family, and per task, family and level, from
    the evaluation's per-item scores (evaluation.item_scores)."""
    groups: dict[str, list[float]] = {}
    for task, docs in items.items():
        for d in docs:
            groups.setdefault(f"{task} {d['family']}", []).append(d["score"])
            if d["level"] is not None:
                groups.setdefault(f"{task} {d['family']} L{d['level']}", []).append(d["score"])
    return {name: (100 * statistics.fmean(v), len(v)) for name, v in groups.items()}


def compare_by_family(items: dict[tuple[str, int], dict[int, dict]], seeds: list[int],
                      confidence: float) -> list[dict]:
    """Rows like compare's, per task and family (and level) of the held-out items, per iteration.

    items: (strategy, seed) -> iteration -> the evaluation's per-item scores of that checkpoint.
    """
    per_arm = {key: {(m, k): v for k, its in by_k.items() for m, v in family_metrics(its).items()}
               for key, by_k in items.items()}
    rows = _rows({key: {mk: v[0] for mk, v in m.items()} for key, m in per_arm.items()}, seeds, confidence)
    for row in rows:  # the same items in every arm (one held-out set)
        row["items"] = per_arm[STRATEGIES[0], seeds[0]][row["metric"], row["iteration"]][1]
    return rows


def composition(records: list[dict]) -> dict[tuple[str, int | None], int]:
    """How many of the instructions parse as each (oracle task family, level); (`other`, None) else."""
    out: dict[tuple[str, int | None], int] = {}
    for record in records:
        key = family_level(record)
        out[key] = out.get(key, 0) + 1
    return out


def compositions(sets: dict[tuple[str, int], dict[int, dict[str, list[dict]]]], seeds: list[int]) -> list[dict]:
    """Mean count over seeds per iteration, set (hard split, new hard, new easy), family and level, per arm.

    sets: (strategy, seed) -> iteration -> set name -> instruction records.
    """
    counts = {key: {(k, name): composition(records) for k, by_set in by_k.items() for name, records in by_set.items()}
              for key, by_k in sets.items()}
    cells = sorted({(k, name, *fl) for c in counts.values() for (k, name), comp in c.items() for fl in comp},
                   key=lambda c: (c[0], c[1], c[2], c[3] or 0))
    return [{"iteration": k, "set": name, "family": family, "level": level,
             **{st: statistics.fmean(counts[st, seed].get((k, name), {}).get((family, level), 0) for seed in seeds)
                for st in STRATEGIES}} for k, name, family, level in cells]


def total_variation(a: dict, b: dict) -> float:
    """Total variation distance between two compositions (counts per family and level) as mixes: half
    the sum of the absolute differences of their shares, 0 (the same mix) to 1 (disjoint)."""
    na, nb = sum(a.values()), sum(b.values())
    if not na or not nb:
        return 0.0 if na == nb else 1.0
    return sum(abs(a.get(key, 0) / na - b.get(key, 0) / nb) for key in set(a) | set(b)) / 2


def homogeneity_p(tables: list[tuple[dict, dict]]) -> float | None:
    """p-value of the chi-square test that two mixes are the same (counts per family and level), the
    pairs of compositions pooled; None where there is one category or none."""
    from scipy.stats import chi2_contingency

    a, b = {}, {}
    for x, y in tables:
        for key, n in x.items():
            a[key] = a.get(key, 0) + n
        for key, n in y.items():
            b[key] = b.get(key, 0) + n
    keys = sorted(set(a) | set(b), key=str)
    if len(keys) < 2 or not sum(a.values()) or not sum(b.values()):
        return None
    return float(chi2_contingency([[a.get(k, 0) for k in keys], [b.get(k, 0) for k in keys]])[1])


# The manipulation check: (set of one arm, set it is compared with, arms compared). The new instructions
# of the two arms, and each arm's hard split against the cache pool it was cut from.
MANIPULATION = (("new hard", "new hard", "adversarial vs uniform"), ("new easy", "new easy", "adversarial vs uniform"),
                ("hard split", "cache pool", "adversarial"), ("hard split", "cache pool", "uniform"))


def manipulation_check(sets: dict[tuple[str, int], dict[int, dict[str, list[dict]]]], seeds: list[int],
                       confidence: float) -> list[dict]:
    """Did the arms' data differ? Per iteration: the total variation distance between the adversarial and
    the uniform arm's mixes (family x level) of new hard and of new easy instructions, and between each
    arm's hard split and its cache pool, per seed, with its mean, t interval over seeds and the p-value
    of a chi-square test of the same mix (counts pooled over seeds). A new-instruction mix that does not
    differ between the arms means the adversarial signal had nothing to act on, whatever the outcomes.

    sets: (strategy, seed) -> iteration -> set name -> instruction records (see compositions)."""
    rows = []
    for k in sorted(set.intersection(*(set(by_k) for by_k in sets.values()))):
        for name, other, arms in MANIPULATION:
            if any(not {name, other} <= set(by_k[k]) for by_k in sets.values()):
                continue   # a set not given (e.g. no cache pool)
            pairs = []
            for seed in seeds:
                if arms == "adversarial vs uniform":
                    pairs.append((composition(sets["adversarial", seed][k][name]),
                                  composition(sets["uniform", seed][k][other])))
                else:
                    pairs.append((composition(sets[arms, seed][k][name]), composition(sets[arms, seed][k][other])))
            if not all(sum(x.values()) and sum(y.values()) for x, y in pairs):
                continue   # a set left empty in a seed: nothing to compare
            tv = [total_variation(x, y) for x, y in pairs]
            mean, low, high = t_interval(tv, confidence) if len(tv) > 1 else (tv[0], None, None)
            rows.append({"iteration": k, "set": name, "against": other, "arms": arms, "values": tv, "mean": mean,
                         "ci_low": low, "ci_high": high, "p_same_mix": homogeneity_p(pairs)})
    return rows


def manipulation_verdict(rows: list[dict], confidence: float) -> str:
    """One sentence before any outcome: did the adversarial arm get different new instructions?"""
    new = [r for r in rows if r["arms"] == "adversarial vs uniform" and r["p_same_mix"] is not None]
    differ = [r for r in new if r["p_same_mix"] < 1 - confidence]
    if not new:
        return "No new instructions to compare: the manipulation cannot be checked."
    if not differ:
        return ("The adversarial arm's new instructions do not differ detectably from the uniform arm's in family x "
                f"level mix (chi-square, every iteration and set p >= {1 - confidence:g}): the adversarial signal had "
                "nothing to act on, so the outcomes below cannot show its effect.")
    return ("The arms' new instructions differ in family x level mix in "
            + ", ".join(f"iteration {r['iteration']} {r['set']} (TV {r['mean']:.2f}, p={r['p_same_mix']:.2g})"
                        for r in differ) + ": the manipulation took effect there.")


def compare(summaries: dict[tuple[str, int], dict], seeds: list[int], confidence: float,
            items: dict | None = None, sets: dict | None = None, effect_of_interest: float | None = None) -> dict:
    """The ablation table (schema `ablation`) from each arm's run summary, keyed (strategy, seed);
    with `items` (see compare_by_family) the per-family rows, with `sets` (see compositions) the
    family x level composition of the hard split and the new instructions."""
    rows = _rows({key: outcome_metrics(s) for key, s in summaries.items()}, seeds, confidence)
    budgets = {key: budget(s) for key, s in summaries.items()}
    stages = sorted(set.union(*(set(b) for b in budgets.values())))
    requests = [{"stage": stage, **{st: statistics.fmean(budgets[st, seed].get(stage, 0) for seed in seeds)
                                    for st in STRATEGIES}} for stage in stages]
    out = {"seeds": list(seeds), "confidence": confidence, "effect_of_interest": effect_of_interest, "rows": rows,
           "requests": requests}
    if items is not None:
        out["by_family"] = compare_by_family(items, seeds, confidence)
    if sets is not None:
        out["composition"] = compositions(sets, seeds)
        out["manipulation"] = manipulation_check(sets, seeds, confidence)
    return out


def verdict(row: dict, effect_of_interest: float | None = None) -> str:
    """The row's reading: the sign of its interval; an interval that contains 0 is "too little power"
    when the design's MDD exceeds the effect of interest (experiment.effect_of_interest), since then a
    difference worth finding would likely be missed, and "no significant difference" otherwise."""
    d = row["difference"]
    if len(set(d["values"])) == 1 and d["mean"] != 0:  # a zero-width interval: no evidence either way
        return "no spread over seeds: not testable"
    if d["ci_low"] > 0:
        return "adversarial better"
    if d["ci_high"] < 0:
        return "uniform better"
    if effect_of_interest is not None and d["mdd"] > effect_of_interest:
        return f"too little power (MDD {d['mdd']:.2f} > {effect_of_interest:g})"
    return "no significant difference"


def table(ablation: dict, rows: str = "rows") -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the ablation: per-arm means, the paired difference with its interval and
    MDD; rows="by_family": the per-family rows, with their number of held-out items."""
    level = f"{100 * ablation['confidence']:g}% CI"
    items = rows == "by_family"
    body = [[r["metric"], str(r["iteration"]), *([str(r["items"])] if items else []), f"{r['adversarial']['mean']:.2f}",
             f"{r['uniform']['mean']:.2f}", f"{r['difference']['mean']:+.2f}",
             f"[{r['difference']['ci_low']:+.2f}, {r['difference']['ci_high']:+.2f}]", f"{r['difference']['mdd']:.2f}",
             verdict(r, ablation.get("effect_of_interest"))] for r in ablation[rows]]
    return ["metric", "iter", *(["items"] if items else []), "adversarial", "uniform", "adv - uni", level,
            "MDD (power 0.8)", "verdict"], body


def composition_table(ablation: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows): per iteration, set and family, the mean count of instructions per level, per arm."""
    levels = sorted({r["level"] for r in ablation["composition"] if r["level"] is not None})
    cells: dict[tuple, dict] = {}
    for r in ablation["composition"]:
        cell = cells.setdefault((r["iteration"], r["set"], r["family"]), {})
        cell[r["level"]] = (r["adversarial"], r["uniform"])
    rows = []
    for (k, name, family), by_level in cells.items():
        leveled = set(by_level) != {None}  # `other` (no oracle family) has no level: its total only
        rows.append([str(k), name, family, *[
            (" / ".join(f"{by_level.get(lv, (0, 0))[i]:g}" for lv in levels) if leveled else "-")
            + f" (total {sum(c[i] for c in by_level.values()):g})" for i in range(2)]])
    by = " / ".join(f"L{lv}" for lv in levels)
    return ["iter", "set", "family", f"adversarial: {by}", f"uniform: {by}"], rows


def manipulation_table(ablation: dict) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the manipulation check: TV distance per iteration and set, interval and p-value."""
    level = f"{100 * ablation['confidence']:g}% CI"
    fmt = lambda x, spec=".3f": "n/a" if x is None else format(x, spec)
    rows = [[str(r["iteration"]), f"{r['set']} vs {r['against']}", r["arms"], fmt(r["mean"]),
             f"[{fmt(r['ci_low'])}, {fmt(r['ci_high'])}]", fmt(r["p_same_mix"], ".3g")]
            for r in ablation.get("manipulation", [])]
    return ["iter", "sets", "arm(s)", "TV distance", level, "p (same mix)"], rows


def requests_table(ablation: dict) -> tuple[list[str], list[list[str]]]:
    rows = [[r["stage"], f"{r['adversarial']:.1f}", f"{r['uniform']:.1f}"] for r in ablation["requests"]]
    return ["stage", "adversarial requests", "uniform requests"], rows
