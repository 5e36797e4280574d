"""Open-ended evaluation: relative-score arithmetic and both-orders handling, checked by hand."""
import json

import pytest

from lionflow.artifacts import read_jsonl, validate
from lionflow.discrimination import failed_verdicts
from lionflow.failures import check_failure_rate
from lionflow.judge import (
    judge_answers,
    load_questions,
    relative_cell,
    relative_scores,
    role_configs,
)
from lionflow.oracle.tasks import parse_problem, problem_key
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS, ROOT


def _record(qid, category, ref_first, stu_first):
    """ref_first / stu_first: (reference_score, student_score) of that order, or None for a failure."""
    orders = []
    for first, scores in (("reference", ref_first), ("student", stu_first)):
        ref, stu = scores if scores else (None, None)
        orders.append({"first": first, "raw": None, "attempts": 1, "reference_score": ref, "student_score": stu,
                       "error": None if scores else "unparseable reply"})
    return {"id": qid, "category": category, "instruction": f"question {qid}", "input": "", "orders": orders,
            "failed": ref_first is None or stu_first is None}


# Hand-worked example. Reference shown first: q1 8 vs 6, q2 10 vs 9, q3 7 vs 4 (reference, student).
# Student shown first: q1 7 vs 7, q2 9 vs 9, q3 6 vs 5. q4 failed in the student-first order.
RECORDS = [_record("q1", "A", (8, 6), (7, 7)), _record("q2", "A", (10, 9), (9, 9)),
           _record("q3", "B", (7, 4), (6, 5)), _record("q4", "B", (9, 9), None)]


def test_relative_scores_by_hand():
    result = relative_scores(RECORDS, checkpoint="iter1", judge_model="j", reference_model="r")
    validate(result, "judge_result", "test")
    overall = result["overall"]
    # q4 failed in one order: out of both orders' totals, counted once, in the order that failed.
    assert (overall["n_questions"], overall["n_scored"], overall["n_failed"]) == (4, 3, 1)
    assert overall["reference_first"]["n_failed"] == 0 and overall["student_first"]["n_failed"] == 1
    # Reference first: student 6 + 9 + 4 = 19 over reference 8 + 10 + 7 = 25 -> 76 %.
    assert overall["reference_first"]["student_total"] == 19 and overall["reference_first"]["reference_total"] == 25
    assert overall["reference_first"]["relative"] == pytest.approx(76.0)
    # Student first: 7 + 9 + 5 = 21 over 7 + 9 + 6 = 22 -> 95.4545 %; mean of the two 85.7273 %.
    assert overall["student_first"]["relative"] == pytest.approx(2100 / 22)
    assert overall["mean_relative"] == pytest.approx((76.0 + 2100 / 22) / 2)
    a, b = result["by_category"]["A"], result["by_category"]["B"]
    assert a["reference_first"]["relative"] == pytest.approx(100 * 15 / 18)  # 83.33
    assert a["student_first"]["relative"] == pytest.approx(100.0)  # 16 / 16
    assert a["mean_relative"] == pytest.approx((100 * 15 / 18 + 100) / 2)
    assert b["reference_first"]["relative"] == pytest.approx(100 * 4 / 7)  # q3 only
    assert b["student_first"]["relative"] == pytest.approx(100 * 5 / 6)
    assert (b["n_questions"], b["n_failed"]) == (2, 1)


def test_a_category_with_only_failures_has_no_score():
    cell = relative_cell([_record("q1", "A", None, (5, 5))])
    assert cell["n_failed"] == 1 and cell["n_scored"] == 0
    assert cell["reference_first"]["relative"] is None and cell["mean_relative"] is None
    assert cell["reference_first"]["n_failed"] == 1 and cell["student_first"]["n_failed"] == 0


def test_failure_rate_check():
    check = lambda rate: check_failure_rate("judge", "question", failed_verdicts(RECORDS), len(RECORDS), rate,
                                            "eval.judge.max_failure_rate")
    assert check(0.25) == 1
    with pytest.raises(RuntimeError, match="judge failed on 1 of 4 questions"):
        check(0.2)


def _answers(questions, texts, model):
    return [{"id": q["id"], "instruction": q["instruction"], "input": q["input"], "answer": t, "model": model,
             "finish_reason": "stop"} for q, t in zip(questions, texts)]


def test_both_orders_with_the_oracle_judge(oracle_llm):
    """The oracle adds +1 to the answer shown first: each order maps its scores back to the right model."""
    questions = [{"id": "a", "category": "math", "instruction": "What is 23 + 72?", "input": ""},
                 {"id": "b", "category": "words", "instruction": 'Reverse the word "cat".', "input": ""}]
    reference = _answers(questions, ["95", "tac"], "teacher")
    student = _answers(questions, ["95", "dog"], "student")
    records = judge_answers(oracle_llm("judge"), PromptTemplate.load(PROMPTS / "judge.yaml"), questions, reference,
                            student, parse_retries=1)
    for r in records:
        validate(r, "judge_score", "test")
    same = records[0]
    ref_first, stu_first = same["orders"]
    assert (ref_first["first"], stu_first["first"]) == ("reference", "student")
    # Both answers correct (9 points), +1 for the first position.
    assert (ref_first["reference_score"], ref_first["student_score"]) == (10, 9)
    assert (stu_first["reference_score"], stu_first["student_score"]) == (9, 10)
    math = relative_scores(records, checkpoint="x", judge_model="j", reference_model="r")["by_category"]["math"]
    assert math["reference_first"]["relative"] == pytest.approx(90.0)
    assert math["student_first"]["relative"] == pytest.approx(100 * 10 / 9)
    wrong = records[1]
    assert all(o["student_score"] < o["reference_score"] for o in wrong["orders"])
    assert records[1]["category"] == "words" and not any(r["failed"] for r in records)


def test_answers_must_cover_the_questions(oracle_llm):
    questions = [{"id": "a", "category": "c", "instruction": "What is 1 + 2?", "input": ""}]
    with pytest.raises(ValueError, match="student answers"):
        judge_answers(oracle_llm("judge"), PromptTemplate.load(PROMPTS / "judge.yaml"), questions,
                      _answers(questions, ["3"], "t"), [], parse_retries=0)


def test_role_defaults_are_the_referee_and_the_teacher():
    llm = {"cache_dir": "c", "endpoints": {"a": {"base_url": "x"}, "b": {"base_url": "y"}},
           "teacher": {"endpoint": "a", "model": "teach", "prompt": "t.yaml", "params": {"temperature": 0.7}},
           "referee": {"endpoint": "b", "model": "ref", "prompt": "r.yaml", "params": {"temperature": 0.2}}}
    judge = {"endpoint": None, "model": None, "params": None, "prompt": "j.yaml", "mode": "online", "reference": None}
    roles = role_configs(llm, judge)
    assert roles["judge"] == {"endpoint": "b", "model": "ref", "params": {"temperature": 0.2}, "prompt": "j.yaml",
                              "mode": "online"}
    assert roles["reference"] == llm["teacher"]
    roles = role_configs(llm, {**judge, "model": "gpt-4", "endpoint": "a",
                               "reference": {"endpoint": "b", "model": "chatgpt", "prompt": "t.yaml"}})
    assert roles["judge"]["model"] == "gpt-4" and roles["reference"]["model"] == "chatgpt"
    with pytest.raises(ValueError, match=r"eval.judge.endpoint='nope' is not one of llm.endpoints \(a, b\)"):
        role_configs(llm, {**judge, "endpoint": "nope"})


def test_questions_file_errors_name_file_line_and_field(tmp_path):
    bad = tmp_path / "q.jsonl"
    bad.write_text('{"id": "1", "category": "c", "instruction": "x"}\n{"id": "2", "instruction": "y"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: field 'category'"):
        load_questions(bad)
    bad.write_text('{"id": "1", "category": "c", "instruction": "x"}\n{"id": "1", "category": "c", "instruction": "y"}\n')
    with pytest.raises(ValueError, match=r"q.jsonl:2: field 'id': duplicate"):
        load_questions(bad)
    assert [q["id"] for q in load_questions(_ok(tmp_path), limit=1)] == ["1"]


def _ok(tmp_path):
    path = tmp_path / "ok.jsonl"
    path.write_text('{"id": "1", "category": "c", "instruction": "x"}\n{"id": "2", "category": "c", "instruction": "y"}\n')
    return path


def test_demo_questions_are_held_out_and_understood_by_the_oracle():
    questions = read_jsonl(ROOT / "resources/demo/eval_questions.jsonl", "eval_question")
    assert len({q["id"] for q in questions}) == len(questions) >= 30
    assert {q["category"] for q in questions} == {"words", "numbers", "math"}
    assert all(parse_problem(q["instruction"], q.get("input") or "") for q in questions)
    keys = {problem_key(q["instruction"], q.get("input") or "") for q in questions}
    seeds = {problem_key(r["instruction"], r.get("input") or "")
             for r in read_jsonl(ROOT / "resources/demo/seed_instructions.jsonl", "seed_instruction")}
    lm_eval = {problem_key(json.loads(line)["question"])
               for f in (ROOT / "resources/lm_eval/data").glob("*.jsonl") for line in f.read_text().splitlines()}
    assert not keys & seeds and not keys & lm_eval


def test_judge_and_reference_spend_from_the_run_budget(tmp_path):
    """The paper's most expensive calls (GPT-4 judging, ChatGPT answering the eval set) are priced, booked
    in the run's ledger with the other roles and stopped by llm.budget_usd before overspending."""
    import yaml
    from snakemake.utils import validate as validate_config

    from lionflow.llm import BudgetExceeded
    from lionflow.smk import judge_llm_for, llm_for

    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    config["llm"] |= {"cache_dir": str(tmp_path / "cache"), "ledger_dir": str(tmp_path / "ledger"),
                      "prices": {"oracle-1": {"input_per_mtok": 1000.0, "output_per_mtok": 4000.0},
                                 "judge-4": {"input_per_mtok": 10000.0, "output_per_mtok": 20000.0}},
                      "budget_usd": 30.0}
    config["eval"]["judge"]["model"] = "judge-4"
    validate_config(config, str(ROOT / "config" / "schema.yaml"))
    ask = lambda llm, n, tag: llm.complete([([{"role": "user", "content": f"{tag}: what is {i} + 1?"}], {})
                                            for i in range(n)])

    ask(llm_for(config, "teacher"), 3, "teacher")
    reference = judge_llm_for(config, "reference")
    ask(reference, 3, "reference")
    assert reference.stats.cost_usd > 0                        # priced as the teacher's model
    entries = [json.loads(line) for p in (tmp_path / "ledger").glob("part-*.jsonl") for line in p.open()]
    stages = {e["stage"] for e in entries if "stage" in e}
    assert {"teacher", "reference"} <= stages                 # one ledger for the run, every role in it
    judge = judge_llm_for(config, "judge")
    with pytest.raises(BudgetExceeded, match=r"llm.budget_usd = \$30"):
        ask(judge, 200, "judge")            # at most 512 tokens at $20,000 per million: ~$10 each, worst case
    entries = [json.loads(line) for p in (tmp_path / "ledger").glob("part-*.jsonl") for line in p.open()]
    spent = sum(e["cost_usd"] for e in entries if "cost_usd" in e and "stage" in e)
    assert "judge" in {e.get("stage") for e in entries} and 0 < spent <= 30.0
