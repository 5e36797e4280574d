"""The report: paper-style tables from a summary, Markdown/HTML rendering, plots written by Agg."""
import pytest

from lionflow.ablation import compare
from lionflow.artifacts import validate
from lionflow.judge import relative_scores
from lionflow.report import (
    category_table,
    lineage_table,
    loop_table,
    open_ended_table,
    plot_ablation,
    plot_eval_by_checkpoint,
    plot_hard_fraction,
    plot_referee_scores,
    plot_requests_per_stage,
    plot_score_gaps,
    reasoning_table,
    referee_table,
    requests_table,
    run_report_markdown,
)


def _judge(checkpoint, ref, stu):
    """A judge result with one question per category, scored (ref, stu) in both orders."""
    records = [{"id": c, "category": c, "instruction": "q", "input": "", "failed": False, "orders": [
        {"first": f, "raw": None, "attempts": 1, "reference_score": ref, "student_score": stu, "error": None}
        for f in ("reference", "student")]} for c in ("math", "words")]
    return relative_scores(records, checkpoint=checkpoint, judge_model="judge-1", reference_model="teacher-1")


def _stats(paid, cached):
    return {"role": "r", "model": "m", "requests": paid + cached, "cache_hits": cached, "paid": paid, "failures": 0,
            "prompt_tokens": 10 * paid, "completion_tokens": paid, "wall_s": 0.1}


@pytest.fixture
def summary():
    iterations = [
        {"iteration": k, "train_pool_size": 10, "cache_pool_size": 10 * k, "n_hard": h, "n_easy": 10 * k - h,
         "new_hard": 3, "new_easy": 3, "teacher_score_mean": 9.0, "student_score_mean": s, "referee_failures": 0,
         "llm": {st: _stats(5 * k, k) for st in ("teacher_train", "teacher_cache", "referee", "generator")},
         "eval": {"task_a": a, "task_b": b, "suite": (a + b) / 2}, "judge": _judge(f"iter{k}", 8, j)}
        for k, h, s, a, b, j in ((1, 6, 6.5, 0.5, 0.25, 6), (2, 8, 7.0, 0.75, 0.5, 7))]
    s = {"run": "t", "iterations": iterations, "base_eval": {"task_a": 0.25, "task_b": 0.0, "suite": 0.125},
         "lm_eval_groups": ["suite"],
         "final_eval": iterations[-1]["eval"], "base_judge": _judge("base", 8, 2), "eval_llm": {"reference": _stats(4, 0)},
         "provenance": {"config_sha256": "ab" * 32, "config": {"run": "t"}, "git_commit": "c0" * 20, "git_dirty": True,
                        "packages": {"torch": "2.13.0"}}}
    validate(s, "summary", "test")
    return s


def test_reasoning_table_has_every_checkpoint_per_task_and_average(summary):
    # The average column is the group's own score (the one its YAML declares), not recomputed here.
    header, rows = reasoning_table(summary)
    assert header == ["checkpoint", "task_a", "task_b", "average"]
    assert rows == [["base", "25.0", "0.0", "12.5"], ["iter1", "50.0", "25.0", "37.5"], ["iter2", "75.0", "50.0", "62.5"]]


def test_open_ended_tables(summary):
    header, rows = open_ended_table(summary)
    assert header[1:4] == ["reference first", "student first", "mean"]
    # base: 2 / 8 = 25 %; iter2: 7 / 8 = 87.5 %, in both orders.
    assert rows[0] == ["base", "25.0", "25.0", "25.0", "2/2", "0"] and rows[2][1:4] == ["87.5", "87.5", "87.5"]
    header, rows = category_table(summary["iterations"][-1]["judge"])
    assert [r[0] for r in rows] == ["math", "words", "overall"]


def test_markdown_report_holds_the_tables(summary):
    text = run_report_markdown(summary)
    for heading in ("## Open-ended evaluation", "## Reasoning (lm-eval, %)", "## The loop", "## LLM requests per stage"):
        assert heading in text
    # every number traceable: the config's hash and the commit, dirty or not
    assert f"config sha256 {'ab' * 32}, git commit {'c0' * 20} from a DIRTY tree" in text.splitlines()[2]
    reasoning = text.split("## Reasoning")[1].split("##")[0]
    assert [line.split("|")[1].strip() for line in reasoning.splitlines() if line.startswith("| iter")] == ["iter1", "iter2"]
    assert "62.5" in reasoning
    assert loop_table(summary)[1][1][5] == "40.0"  # hard % of iteration 2: 8 of 20
    assert dict((r[0], r[2]) for r in requests_table(summary)[1])["referee"] == "15"  # 5 + 10 paid
    # Without the judge, the open-ended section is left out, not filled with placeholders.
    for it in summary["iterations"]:
        it["judge"] = None
    summary["base_judge"] = None
    assert "Open-ended" not in run_report_markdown(summary)


def test_plots_are_written(summary, tmp_path):
    plot_hard_fraction(summary, tmp_path / "hard.png")
    plot_referee_scores(summary, tmp_path / "scores.png")
    plot_score_gaps({1: [0.0, 1.5, -1.0, 2.0], 2: [0.0, 0.5]}, 1.0, tmp_path / "gaps.png")
    plot_eval_by_checkpoint(summary, tmp_path / "eval.png")
    plot_requests_per_stage(summary, tmp_path / "requests.png")
    runs = {(st, seed): summary for st in ("adversarial", "uniform") for seed in (0, 1)}
    plot_ablation(compare(runs, [0, 1], 0.95), tmp_path / "ablation.png")
    for name in ("hard", "scores", "gaps", "eval", "requests", "ablation"):
        data = (tmp_path / f"{name}.png").read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 5000


def _referee(agreement, warning=None):
    return {"pairs": 10, "scored": 8, "order_agreement": agreement, "position_bias": 0.25, "tie_rate": 0.125,
            "label_flips": {"teacher_first": 0.25, "student_first": 0.0, "either": 0.375},
            "failure_rate": {"pairs": 0.2, "unparseable": 0.05, "request": 0.05}, "warning": warning}


def test_referee_reliability_table_and_warning(summary):
    summary["iterations"][0]["referee"] = _referee(0.875)
    summary["iterations"][1]["referee"] = _referee(0.5, "agreement 50.0% below 65%")
    summary["iterations"][1]["rejected"] = {"contaminated": 4, "near_duplicate": 9}
    validate(summary, "summary", "test")
    header, rows = referee_table(summary)
    assert header[2:4] == ["order agreement %", "position bias"]
    assert rows[0] == ["1", "8/10", "87.5", "+0.25", "12.5", "25.0", "0.0", "37.5", "20.0", "5.0", "5.0"]
    assert rows[1][2] == "50.0"
    text = run_report_markdown(summary)
    section = text.split("## Referee reliability")[1].split("##")[0]
    assert "**Warning**, iteration 2: agreement 50.0% below 65%." in section and "iteration 1:" not in section
    loop = loop_table(summary)
    assert [r[loop[0].index("contaminated")] for r in loop[1]] == ["n/a", "4"]


def test_lineage_table_counts_hard_instructions_per_seed_family(summary):
    summary["iterations"][0]["hard_by_seed_family"] = {"add": 4, "repeat": 2}
    summary["iterations"][1]["hard_by_seed_family"] = {"add": 5, "sort": 3}
    validate(summary, "summary", "test")
    assert lineage_table(summary) == (["iter", "add", "repeat", "sort", "hard"],
                                      [["1", "4", "2", "0", "6"], ["2", "5", "0", "3", "8"]])
    assert "| sort" in run_report_markdown(summary).split("## Hard instructions by seed family")[1]


def test_excluded_teacher_answers_are_counted_per_iteration_in_summary_and_report(summary):
    from lionflow.summary import excluded_answers, format_table

    summary["iterations"][1]["llm"]["teacher_train"]["excluded_answers"] = {"empty": 1, "cut": 2, "refusal": 0}
    summary["iterations"][1]["llm"]["teacher_cache"]["excluded_answers"] = {"empty": 0, "cut": 1, "refusal": 1}
    summary["iterations"][1]["excluded_answers"] = excluded_answers(summary["iterations"][1]["llm"].values())
    validate(summary, "summary", "test")
    assert summary["iterations"][1]["excluded_answers"] == {"empty": 1, "cut": 3, "refusal": 1}
    header, rows = loop_table(summary)
    column = header.index("answers excluded")
    assert [r[column] for r in rows] == ["0", "5 (1 empty, 3 cut, 1 refusal)"]
    table = format_table(summary).splitlines()
    excl = table[0].split().index("excluded")
    assert [line.split()[excl] for line in table[2:]] == ["0", "5"]


def test_a_split_outside_the_hard_fraction_band_is_a_warning_in_the_summary_table_and_report(summary):
    from lionflow.discrimination import split_warning
    from lionflow.summary import format_table

    band = [0.1, 0.9]
    assert split_warning(4, 6, band, 1.0) is None and split_warning(1, 9, band, 1.0) is None  # the band's edges
    assert split_warning(0, 0, band, 1.0) is None   # nothing scored: no fraction
    most = split_warning(19, 1, band, 1.5)
    assert most.startswith("19 of 20 scored instructions are hard (95%), outside discrimination.hard_fraction_band=")
    assert "degenerates to uniform" in most and "raise discrimination.threshold (now 1.5)" in most
    assert "lower discrimination.threshold (now 1)" in split_warning(1, 99, band, 1.0)
    summary["iterations"][1] |= {"hard_fraction": 0.95, "split_warning": most}
    validate(summary, "summary", "test")
    assert f"**Warning**, iteration 2: {most}." in run_report_markdown(summary).split("## The loop")[1]
    assert format_table(summary).splitlines()[-1] == f"Warning, iteration 2: {most}"
