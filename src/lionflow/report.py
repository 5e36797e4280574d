"""Tables and plots of a run, from its summary (schema `summary`) and referee scores.

Tables come as rows (lists of cells) so that one function feeds both the Markdown report
(results/<run>/report.md) and the HTML tables of Snakemake's report. Plots use matplotlib's
Agg backend: no display needed.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)
from tabulate import tabulate  # noqa: E402

from .evaluation import group_label  # noqa: E402
from .layout import LLM_STAGES  # noqa: E402
from .provenance import describe  # noqa: E402
from .summary import excluded_answers, llm_total, stage_totals  # noqa: E402


def pct(x: float | None, digits: int = 1) -> str:
    return "n/a" if x is None else f"{x:.{digits}f}"


def checkpoints(summary: dict) -> list[str]:
    return ["base"] + [f"iter{it['iteration']}" for it in summary["iterations"]]


def _evals(summary: dict) -> dict[str, dict]:
    return {"base": summary["base_eval"], **{f"iter{it['iteration']}": it["eval"] for it in summary["iterations"]}}


def _judges(summary: dict) -> dict[str, dict | None]:
    return {"base": summary.get("base_judge"),
            **{f"iter{it['iteration']}": it.get("judge") for it in summary["iterations"]}}


def lm_eval_columns(summary: dict) -> tuple[list[str], list[str]]:
    """(tasks, groups) of the run's lm-eval results: a group's score is the average its YAML declares
    (aggregate_metric_list); the report computes none of its own."""
    groups = [g for g in summary.get("lm_eval_groups", []) if g in summary["base_eval"]]
    return [t for t in sorted(summary["base_eval"]) if t not in groups], groups




# ---------------------------------------------------------------- tables: (header, rows)

def reasoning_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """lm-eval main metric (in %) per task and each group's declared average, for the base and every checkpoint."""
    tasks, groups = lm_eval_columns(summary)
    rows = [[name] + [pct(100 * m[t]) if t in m else "n/a" for t in tasks + groups] for name, m in _evals(summary).items()]
    return ["checkpoint", *tasks, *(group_label(g, groups) for g in groups)], rows


def open_ended_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Relative score (student / reference, %) per checkpoint in both orders and their mean."""
    rows = []
    for name, j in _judges(summary).items():
        if j is None:
            continue
        o = j["overall"]
        rows.append([name, pct(o["reference_first"]["relative"]), pct(o["student_first"]["relative"]),
                     pct(o["mean_relative"]), f"{o['n_scored']}/{o['n_questions']}", str(o["n_failed"])])
    return ["checkpoint", "reference first", "student first", "mean", "scored", "failed"], rows


def category_table(judge_result: dict) -> tuple[list[str], list[list[str]]]:
    """Relative score per category (and overall) of one checkpoint, both orders and their mean."""
    cells = [*judge_result["by_category"].items(), ("overall", judge_result["overall"])]
    rows = [[name, str(c["n_questions"]), pct(c["reference_first"]["relative"]), pct(c["student_first"]["relative"]),
             pct(c["mean_relative"]), str(c["n_failed"])] for name, c in cells]
    return ["category", "questions", "reference first", "student first", "mean", "failed"], rows


def loop_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Pools, split, referee scores and LLM requests per iteration."""
    rows = []
    for it in summary["iterations"]:
        judged = it["n_hard"] + it["n_easy"]
        llm = llm_total(it.get("llm", {}).values())
        rows.append([str(it["iteration"]), str(it["train_pool_size"]), str(it["cache_pool_size"]), str(it["n_hard"]),
                     str(it["n_easy"]), pct(100 * it["n_hard"] / judged if judged else None),
                     pct(it["teacher_score_mean"], 2), pct(it["student_score_mean"], 2), str(it["referee_failures"]),
                     str(it["new_hard"]), str(it["new_easy"]),
                     str(it["rejected"]["contaminated"]) if "rejected" in it else "n/a",
                     str(llm["paid"]), str(llm["cache_hits"]), excluded_cell(excluded_answers(it.get("llm", {}).values()))])
    return ["iter", "train", "cache", "hard", "easy", "hard %", "teacher", "student", "referee failed",
            "new hard", "new easy", "contaminated", "paid", "cached", "answers excluded"], rows


def excluded_cell(counts: dict[str, int]) -> str:
    """'0', or the total with its kinds: '3 (2 cut, 1 empty)'."""
    total = sum(counts.values())
    return f"{total} ({', '.join(f'{n} {k}' for k, n in counts.items() if n)})" if total else "0"


def referee_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """The referee's reliability per iteration (summary `referee`): order agreement, position bias, ties,
    hard/easy labels a single order would flip, failures by kind."""
    share = lambda x: pct(None if x is None else 100 * x)
    rows = []
    for it in summary["iterations"]:
        r = it.get("referee")
        if r is None:
            continue
        bias = "n/a" if r["position_bias"] is None else f"{r['position_bias']:+.2f}"
        rows.append([str(it["iteration"]), f"{r['scored']}/{r['pairs']}", share(r["order_agreement"]), bias,
                     share(r["tie_rate"]), *(share(r["label_flips"][k]) for k in ("teacher_first", "student_first", "either")),
                     *(share(r["failure_rate"][k]) for k in ("pairs", "unparseable", "request"))])
    return ["iter", "scored", "order agreement %", "position bias", "ties %", "flip: teacher first %",
            "flip: student first %", "flip: either %", "failed pairs %", "unparseable %", "request failed %"], rows


def lineage_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """Per iteration, how many hard instructions descend from each seed family (summary `hard_by_seed_family`)."""
    its = [it for it in summary["iterations"] if "hard_by_seed_family" in it]
    families = sorted({f for it in its for f in it["hard_by_seed_family"]})
    rows = [[str(it["iteration"]), *(str(it["hard_by_seed_family"].get(f, 0)) for f in families), str(it["n_hard"])]
            for it in its]
    return ["iter", *families, "hard"], rows


def split_warnings(summary: dict) -> list[str]:
    return [f"iteration {it['iteration']}: {it['split_warning']}" for it in summary["iterations"]
            if it.get("split_warning")]


def referee_warnings(summary: dict) -> list[str]:
    return [f"iteration {it['iteration']}: {it['referee']['warning']}" for it in summary["iterations"]
            if (it.get("referee") or {}).get("warning")]


LINEAGE_TEXT = ("Each iteration's hard instructions (the referee's split of its cache pool), by the family of the seed "
                "their parent chain leads back to (`python -m lionflow.lineage results/<run> <id>` prints a chain).")
REFEREE_TEXT = ("Each pair is scored with the teacher's answer shown first and with the student's shown first; the split "
                "uses the mean. Order agreement: pairs with the same winner (or a tie) in both orders; position bias: mean "
                "score of the answer shown first minus the one shown second; ties: verdicts scoring both equal; flip: pairs "
                "whose hard/easy label under that order alone differs from the mean's; failures: pairs left out, and "
                "verdicts (two per pair) by kind.")


def requests_table(summary: dict) -> tuple[list[str], list[list[str]]]:
    """LLM requests and tokens per stage, summed over iterations, plus the evaluation's."""
    totals = {**stage_totals(summary), **{f"eval: {stage}": s for stage, s in summary.get("eval_llm", {}).items()}}
    rows = [[stage, *(str(t[k]) for k in ("requests", "paid", "cache_hits", "failures")),
             str(t["prompt_tokens"] + t["completion_tokens"])] for stage, t in totals.items()]
    return ["stage", "requests", "paid", "cached", "failed", "tokens"], rows


def markdown(table: tuple[list[str], list[list[str]]]) -> str:
    header, rows = table
    return tabulate(rows, headers=header, tablefmt="github", disable_numparse=True)


def html(table: tuple[list[str], list[list[str]]]) -> str:
    header, rows = table
    return tabulate(rows, headers=header, tablefmt="html", disable_numparse=True)


def html_page(title: str, sections: list[tuple[str, str, str]]) -> str:
    """A self-contained HTML page: (heading, explanation, table html) per section."""
    style = ("body{font-family:sans-serif;margin:1.5em} table{border-collapse:collapse;margin-bottom:1.5em}"
             "th,td{border:1px solid #bbb;padding:4px 10px;text-align:right} th{background:#eee}"
             "td:first-child,th:first-child{text-align:left}")
    body = "".join(f"<h3>{h}</h3><p>{text}</p>{t}" for h, text, t in sections)
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{title}</title><style>{style}</style>"
            f"</head><body><h2>{title}</h2>{body}</body></html>\n")


def run_report_markdown(summary: dict) -> str:
    """results/<run>/report.md: the paper-style tables and the loop's, for people who read text."""
    parts = [f"# lionflow run `{summary['run']}`", "", f"Made with {describe(summary['provenance'])}.", ""]
    judges = {k: v for k, v in _judges(summary).items() if v is not None}
    if judges:
        final_name, final = list(judges.items())[-1]
        parts += ["## Open-ended evaluation (relative score, %)", "",
                  f"Student total / reference total of the judge's 1-10 scores; judge `{final['judge_model']}`, "
                  f"reference `{final['reference_model']}`. The paper's two settings: the reference's answer shown "
                  "first, and the student's shown first; `mean` is their average. Questions the judge could not "
                  "score in an order are left out of both orders' totals and counted as failed.", "",
                  markdown(open_ended_table(summary)), "", f"Per category, {final_name}:", "",
                  markdown(category_table(final)), ""]
    parts += ["## Reasoning (lm-eval, %)", "", "Main metric per task, zero-shot, prompts in the student's chat template; "
              "`average` is the one the lm-eval group declares (`aggregate_metric_list`).",
              "", markdown(reasoning_table(summary)), "",
              "## The loop", "", markdown(loop_table(summary)), "",
              *(f"**Warning**, {w}." for w in split_warnings(summary)), "",
              "## Referee reliability", "", REFEREE_TEXT, "", markdown(referee_table(summary)), "",
              *(f"**Warning**, {w}." for w in referee_warnings(summary)),
              "", "## Hard instructions by seed family", "", LINEAGE_TEXT, "", markdown(lineage_table(summary)), "",
              "## LLM requests per stage", "", markdown(requests_table(summary)), ""]
    return "\n".join(parts)


# ---------------------------------------------------------------- plots

def _iterations(summary: dict) -> list[int]:
    return [it["iteration"] for it in summary["iterations"]]


def _save(fig, path, layout: bool = True) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    if layout:
        fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_hard_fraction(summary: dict, path) -> None:
    its = _iterations(summary)
    hard = [it["n_hard"] for it in summary["iterations"]]
    judged = [it["n_hard"] + it["n_easy"] for it in summary["iterations"]]
    frac = [100 * h / n if n else 0.0 for h, n in zip(hard, judged)]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    bars = ax.bar(its, frac, color="#c0504d", width=0.6)
    for bar, h, n in zip(bars, hard, judged):
        ax.annotate(f"{h}/{n}", (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom",
                    fontsize=9)
    ax.set(xlabel="iteration", ylabel="hard instructions (% of cache pool)", ylim=(0, 105), xticks=its,
           title="Hard fraction of the cache pool")
    ax.grid(axis="y", alpha=0.3)
    _save(fig, path)


def plot_referee_scores(summary: dict, path) -> None:
    its = _iterations(summary)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for key, label, color in (("teacher_score_mean", "teacher", "#1f77b4"), ("student_score_mean", "student", "#ff7f0e")):
        ys = [it[key] for it in summary["iterations"]]
        ax.plot(its, [float("nan") if y is None else y for y in ys], marker="o", label=label, color=color)
    ax.set(xlabel="iteration", ylabel="mean referee score (1-10, both orders)", ylim=(0.5, 10.5), xticks=its,
           title="Referee scores on the cache pool")
    ax.legend()
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_score_gaps(gaps_by_iteration: dict[int, list[float]], threshold: float, path) -> None:
    """Histogram of teacher - student referee score per iteration (one panel each)."""
    its = sorted(gaps_by_iteration)
    fig, axes = plt.subplots(len(its), 1, figsize=(6, 1.2 + 2.0 * len(its)), sharex=True, squeeze=False)
    everything = [g for gs in gaps_by_iteration.values() for g in gs] or [0.0]
    lo, hi = min(min(everything), -1.0), max(max(everything), threshold + 1)
    bins = [lo - 0.25 + 0.5 * i for i in range(int((hi - lo) / 0.5) + 2)]
    for ax, k in zip(axes[:, 0], its):
        gaps = gaps_by_iteration[k]
        ax.hist(gaps, bins=bins, color="#4f81bd", edgecolor="white")
        ax.axvline(threshold, color="#c0504d", linestyle="--", label=f"hard if gap >= {threshold:g}")
        hard = sum(g >= threshold for g in gaps)
        ax.set_title(f"iteration {k}: {hard} hard of {len(gaps)}", fontsize=10)
        ax.set_ylabel("instructions")
        ax.legend(fontsize=8, loc="upper center")
    axes[-1, 0].set_xlabel("score gap (teacher - student)")
    _save(fig, path)


def plot_eval_by_checkpoint(summary: dict, path) -> None:
    names = checkpoints(summary)
    x = list(range(len(names)))
    judges = _judges(summary)
    has_judge = any(j is not None for j in judges.values())
    fig, axes = plt.subplots(1, 2 if has_judge else 1, figsize=(11 if has_judge else 6, 4), squeeze=False)
    ax = axes[0, 0]
    evals = _evals(summary)
    tasks, groups = lm_eval_columns(summary)
    for task in tasks:
        ax.plot(x, [100 * evals[n].get(task, float("nan")) for n in names], marker="o", label=task)
    for group in groups:
        ax.plot(x, [100 * evals[n].get(group, float("nan")) for n in names], marker="s", linestyle="--",
                label=group_label(group, groups))
    ax.set(xticks=x, xticklabels=names, ylabel="lm-eval main metric (%)", title="Reasoning (lm-eval)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    if has_judge:
        ax = axes[0, 1]
        for key, label, style in (("reference_first", "reference first", ":"),
                                  ("student_first", "student first", ":"), ("mean", "mean", "-")):
            ys = []
            for n in names:
                j = judges[n]
                value = None if j is None else (j["overall"]["mean_relative"] if key == "mean"
                                                else j["overall"][key]["relative"])
                ys.append(float("nan") if value is None else value)
            ax.plot(x, ys, marker="o", linestyle=style, label=label)
        ax.axhline(100, color="grey", linewidth=0.8)
        ax.set(xticks=x, xticklabels=names, ylabel="student / reference (%)",
               title="Open-ended (judge, relative score)")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    _save(fig, path)


def plot_requests_per_stage(summary: dict, path) -> None:
    """Requests (paid and from the cache) and tokens per LLM stage, one bar group per iteration."""
    its = _iterations(summary)
    stages = [s for s in LLM_STAGES if any(s in it.get("llm", {}) for it in summary["iterations"])]
    width = 0.8 / max(len(stages), 1)
    fig, (ax_req, ax_tok) = plt.subplots(1, 2, figsize=(11, 4))
    colors = plt.get_cmap("tab10").colors
    for i, stage in enumerate(stages):
        xs = [k - 0.4 + width * (i + 0.5) for k in its]
        stats = [it.get("llm", {}).get(stage) for it in summary["iterations"]]
        paid = [s["paid"] if s else 0 for s in stats]
        cached = [s["cache_hits"] if s else 0 for s in stats]
        tokens = [s["prompt_tokens"] + s["completion_tokens"] if s else 0 for s in stats]
        ax_req.bar(xs, paid, width, color=colors[i], label=stage)
        ax_req.bar(xs, cached, width, bottom=paid, color=colors[i], alpha=0.35, hatch="//")
        ax_tok.bar(xs, tokens, width, color=colors[i])
    ax_req.set(xlabel="iteration", ylabel="requests (solid: paid, hatched: from cache)", xticks=its,
               title="LLM requests per stage")
    ax_tok.set(xlabel="iteration", ylabel="prompt + completion tokens (paid requests)", xticks=its,
               title="Tokens per stage (cost)")
    for ax in (ax_req, ax_tok):
        ax.grid(axis="y", alpha=0.3)
    fig.legend(loc="lower center", ncol=len(stages), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    _save(fig, path, layout=False)


def plot_ablation(ablation: dict, path) -> None:
    """Adversarial - uniform per iteration with its confidence interval, one panel per metric."""
    metrics = list(dict.fromkeys(r["metric"] for r in ablation["rows"]))
    cols = min(3, len(metrics))
    nrows = math.ceil(len(metrics) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    for ax, metric in zip(axes.flat, metrics):
        rows = [r for r in ablation["rows"] if r["metric"] == metric]
        its = [r["iteration"] for r in rows]
        mean = [r["difference"]["mean"] for r in rows]
        err = [[m - r["difference"]["ci_low"] for m, r in zip(mean, rows)],
               [r["difference"]["ci_high"] - m for m, r in zip(mean, rows)]]
        ax.errorbar(its, mean, yerr=err, fmt="o", capsize=5, color="#1f77b4")
        for r in rows:
            ax.scatter([r["iteration"]] * len(r["difference"]["values"]), r["difference"]["values"], s=12,
                       color="grey", alpha=0.6, zorder=0)
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set(title=metric, xlabel="iteration", ylabel="adversarial - uniform", xticks=its)
        ax.margins(x=0.3)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(metrics):]:
        ax.axis("off")
    fig.suptitle(f"Paired difference over seeds {ablation['seeds']} "
                 f"(dots: seeds; bars: {100 * ablation['confidence']:g}% t interval)", fontsize=10)
    _save(fig, path)


def plot_ablation_by_family(ablation: dict, path) -> None:
    """Per iteration (rows): adversarial - uniform per held-out task and family with its interval and
    +-MDD (grey ticks); how many hard-split and new instructions each arm has per family."""
    its = sorted({r["iteration"] for r in ablation["by_family"]} | {r["iteration"] for r in ablation["composition"]})
    fig, axes = plt.subplots(len(its), 3, figsize=(17, 4.2 * len(its)), squeeze=False)
    for (left, middle, right), k in zip(axes, its):
        rows = [r for r in ablation["by_family"] if r["iteration"] == k and " L" not in r["metric"]]
        y = range(len(rows))
        mean = [r["difference"]["mean"] for r in rows]
        left.errorbar(mean, y, xerr=[[m - r["difference"]["ci_low"] for m, r in zip(mean, rows)],
                                     [r["difference"]["ci_high"] - m for m, r in zip(mean, rows)]],
                      fmt="o", capsize=3, color="#1f77b4")
        for i, r in enumerate(rows):
            left.plot([-r["difference"]["mdd"], r["difference"]["mdd"]], [i, i], "|", color="grey", markersize=9)
        left.axvline(0, color="black", linewidth=0.8)
        left.set_yticks(list(y), [f"{r['metric']} ({r['items']})" for r in rows], fontsize=7)
        left.set(title=f"iteration {k}: adversarial - uniform (points)", xlabel="held-out score difference (points)")
        left.grid(alpha=0.3)
        for ax, names in ((middle, ("hard split",)), (right, ("new hard", "new easy"))):
            comp = [r for r in ablation["composition"] if r["iteration"] == k and r["set"] in names]
            if not comp:  # the base student (iteration 0): no split, no generation yet
                ax.text(0.5, 0.5, f"iteration {k}: the base student,\nbefore any split or generation",
                        ha="center", va="center", transform=ax.transAxes)
                ax.axis("off")
                continue
            families = sorted({r["family"] for r in comp})
            for i, (arm, color) in enumerate((("adversarial", "#d62728"), ("uniform", "#7f7f7f"))):
                counts = [sum(r[arm] for r in comp if r["family"] == f) for f in families]
                ax.barh([j + 0.4 * i for j in range(len(families))], counts, height=0.4, color=color, label=arm)
            ax.set_yticks([j + 0.2 for j in range(len(families))], families, fontsize=7)
            ax.set(title=f"iteration {k}: {' + '.join(names)} by family", xlabel="instructions (mean over seeds)")
            ax.legend(fontsize=7)
            ax.grid(alpha=0.3)
    fig.suptitle(f"By family, seeds {ablation['seeds']} (bars: {100 * ablation['confidence']:g}% t interval; "
                 "grey ticks: +-MDD at power 0.8; in brackets: held-out items)", fontsize=10)
    _save(fig, path)
