"""The run summary (schema `summary`): per-iteration pool sizes, split, scores, LLM statistics, evals
(lm-eval and, when enabled, the judge's open-ended relative scores)."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from .artifacts import read_json, schema, write_json
from .discrimination import referee_reliability, split_warning
from .frames import scan_frame
from .imitation import EXCLUDED_KINDS
from .layout import LLM_STAGES
from .lineage import families_of, index_files
from .provenance import provenance

POOL_FILES = {  # summary field -> (Snakemake input name, artifact kind); counted rows
    "train_pool_size": ("train_pools", "instruction"), "cache_pool_size": ("cache_pools", "instruction"),
    "n_hard": ("hard", "scored_instruction"), "n_easy": ("easy", "scored_instruction"),
    "new_hard": ("new_hard", "instruction"), "new_easy": ("new_easy", "instruction"),
}


def score_statistics(scores: pl.LazyFrame) -> dict:
    """Mean referee scores over the pairs it could score, and the number it could not (one lazy query)."""
    scored = pl.col("failed").not_()
    row = scores.select(
        teacher_score_mean=pl.col("teacher_score").filter(scored).mean(),
        student_score_mean=pl.col("student_score").filter(scored).mean(),
        referee_failures=pl.col("failed").sum(),
    ).collect(engine="streaming").row(0, named=True)
    rounded = {k: None if row[k] is None else round(row[k], 4) for k in ("teacher_score_mean", "student_score_mean")}
    return {**rounded, "referee_failures": int(row["referee_failures"] or 0)}


def rejection_counts(rejected_path) -> dict[str, int]:
    """Generated instructions rejected per reason (every reason of the schema, 0 when none)."""
    counts = dict(scan_frame(rejected_path, "rejected_instruction").group_by("reason").len()
                  .collect(engine="streaming").iter_rows())
    return {reason: int(counts.get(reason, 0)) for reason in schema("rejected_instruction")["properties"]["reason"]["enum"]}


def excluded_answers(stages) -> dict[str, int]:
    """Teacher answers excluded from training (llm.answer_checks) per kind, summed over stages' llm_stats
    (0 for stages and older artifacts without the count)."""
    stages = list(stages)
    return {kind: sum((s.get("excluded_answers") or {}).get(kind, 0) for s in stages) for kind in EXCLUDED_KINDS}


def iteration_summary(k: int, inputs, *, llm: dict, evaluation: dict, judge: dict | None = None,
                      threshold: float, min_order_agreement: float, hard_fraction_band: list[float]) -> dict:
    """Iteration k's row: pool and split sizes, the hard fraction (and a warning outside the band),
    referee scores and reliability, rejections, LLM statistics, evaluations."""
    i = k - 1
    sizes = {field: scan_frame(getattr(inputs, name)[i], kind).select(pl.len()).collect(engine="streaming").item()
             for field, (name, kind) in POOL_FILES.items()}
    scores = scan_frame(inputs.scores[i], "referee_score")
    scored = sizes["n_hard"] + sizes["n_easy"]
    return {"iteration": k, **sizes, "hard_fraction": round(sizes["n_hard"] / scored, 4) if scored else None,
            "split_warning": split_warning(sizes["n_hard"], sizes["n_easy"], hard_fraction_band, threshold),
            **score_statistics(scores),
            "referee": referee_reliability(scores, threshold, min_order_agreement),
            "rejected": rejection_counts(inputs.rejected[i]),
            "excluded_answers": excluded_answers(llm.values()),
            "llm": llm, "eval": evaluation, "judge": judge}


LEDGER_FIELDS = ("requests", "cache_hits", "paid", "failures", "retries", "rate_limited", "prompt_tokens",
                 "completion_tokens", "cost_usd")


def llm_total(stages) -> dict:
    """llm_stats summed: the run's ledger over every stage, or an iteration's over its stages (fields
    absent from older artifacts count 0)."""
    stages = list(stages)
    total = {f: sum(s.get(f, 0) for s in stages) for f in LEDGER_FIELDS}
    total["cost_usd"] = round(total["cost_usd"], 6)
    return total


def stage_totals(summary: dict) -> dict[str, dict]:
    """Each LLM stage of the loop with its llm_stats summed over the iterations, in stage order."""
    stages = dict.fromkeys(stage for it in summary["iterations"] for stage in it.get("llm", {}))
    return {stage: llm_total(it["llm"][stage] for it in summary["iterations"] if stage in it.get("llm", {}))
            for stage in stages}


def summarize(inputs, out_path: str, run: str, config: dict, root, *, threshold: float,
              min_order_agreement: float, hard_fraction_band: list[float]) -> dict:
    """`inputs`: Snakemake's named input lists (one path per iteration, in iteration order); `config`: the
    run's validated config and `root` the project's checkout, for the provenance; threshold,
    min_order_agreement and hard_fraction_band: discrimination's (the split and the referee's reliability)."""
    stats = {i + 1: {stage: read_json(getattr(inputs, f"llm_{stage}")[i], "llm_stats") for stage in LLM_STAGES}
             for i in range(len(inputs.train_pools))}
    # The judge's results and request statistics, when the open-ended evaluation is enabled.
    judges = {r["checkpoint"]: r for r in (read_json(p, "judge_result") for p in getattr(inputs, "judge_results", []))}
    eval_llm = {Path(p).stem: read_json(p, "llm_stats") for p in getattr(inputs, "judge_stats", [])}
    # Every instruction's chain back to its seed: the seed pool and all new instructions.
    lineage = index_files([inputs.cache_pools[0], *inputs.new_hard, *inputs.new_easy])
    iterations = []
    for i in range(len(inputs.train_pools)):
        iterations.append(iteration_summary(
            i + 1, inputs,
            llm=stats.get(i + 1, {}),
            evaluation=read_json(inputs.iteration_evals[i], "eval_metrics")["metrics"],
            judge=judges.get(f"iter{i + 1}"), threshold=threshold, min_order_agreement=min_order_agreement,
            hard_fraction_band=hard_fraction_band,
        ))
        hard_ids = scan_frame(inputs.hard[i], "scored_instruction").select("id").collect(engine="streaming")["id"]
        iterations[-1]["hard_by_seed_family"] = dict(sorted(families_of(hard_ids, lineage).items()))
    base_eval = read_json(inputs.base_eval, "eval_metrics")
    summary = {
        "run": run,
        "iterations": iterations,
        "base_eval": base_eval["metrics"],
        "lm_eval_groups": base_eval["groups"],
        "final_eval": iterations[-1]["eval"],
        "base_judge": judges.get("base"),
        "eval_llm": eval_llm,
        "llm_total": llm_total([*(s for it in stats.values() for s in it.values()), *eval_llm.values()]),
        "provenance": provenance(config, root),
    }
    write_json(out_path, summary, "summary")
    return summary


def format_table(summary: dict) -> str:
    """A plain-text table of the run, for the terminal."""
    tasks = sorted(summary["base_eval"])
    # The judge's relative score (mean of both orders, %), when the open-ended evaluation ran.
    judge = lambda j: "-" if not j or j["overall"]["mean_relative"] is None else f"{j['overall']['mean_relative']:.1f}"
    head = ["iter", "train", "cache", "hard", "easy", "new_hard", "new_easy", "teacher", "student", "ref_fail",
            "paid", "cached", "excluded"] + tasks + ["judge %"]
    rows = [["base"] + [""] * 12 + [f"{summary['base_eval'][t]:.3f}" for t in tasks] + [judge(summary.get("base_judge"))]]
    for it in summary["iterations"]:
        total = llm_total(it["llm"].values())
        paid, cached = total["paid"], total["cache_hits"]
        fmt = lambda x: "-" if x is None else f"{x:.2f}"
        rows.append([str(it["iteration"]), str(it["train_pool_size"]), str(it["cache_pool_size"]), str(it["n_hard"]),
                     str(it["n_easy"]), str(it["new_hard"]), str(it["new_easy"]), fmt(it["teacher_score_mean"]),
                     fmt(it["student_score_mean"]), str(it["referee_failures"]), str(paid), str(cached),
                     str(sum(excluded_answers(it["llm"].values()).values()))]
                    + [f"{it['eval'].get(t, float('nan')):.3f}" for t in tasks] + [judge(it.get("judge"))])
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    warnings = [f"Warning, iteration {it['iteration']}: {it['split_warning']}" for it in summary["iterations"]
                if it.get("split_warning")]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in [head, *rows]]
    return "\n".join(lines + warnings)


if __name__ == "__main__":
    import sys

    print(format_table(read_json(sys.argv[1], "summary")))
