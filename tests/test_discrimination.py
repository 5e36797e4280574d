from types import SimpleNamespace

import polars as pl
import pytest

from lionflow.discrimination import failed_verdicts, parse_scores, score_pairs, split_hard_easy
from lionflow.failures import check_failure_rate
from lionflow.llm import Completion
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS


@pytest.mark.parametrize("reply, expected", [
    ("Both fine.\nAssistant 1: 8\nAssistant 2: 6", (8.0, 6.0)),
    ("**Assistant 1:** 7.5\n**Assistant 2:** 9/10", (7.5, 9.0)),
    ("Assistant 1: 3\nAssistant 2: 4\nOn reflection:\nAssistant 1 score: 5\nAssistant 2 score: 4", (5.0, 4.0)),
])
def test_parse_scores(reply, expected):
    assert parse_scores(reply) == expected


@pytest.mark.parametrize("reply", ["", "Assistant 1: 8", "Assistant 1: 8\nAssistant 2: 11",
                                   "Assistant 1: 0\nAssistant 2: 5", "I like both."])
def test_parse_scores_rejects(reply):
    with pytest.raises(ValueError):
        parse_scores(reply)


def _answers(pairs):
    teacher = [{"id": f"q{i}", "instruction": q, "input": inp, "answer": a, "model": "t", "finish_reason": "stop"}
               for i, (q, inp, a, _) in enumerate(pairs)]
    student = [{**t, "answer": s, "model": "s"} for t, (_, _, _, s) in zip(teacher, pairs)]
    return teacher, student


def test_both_orders_cancel_position_bias_with_the_oracle(oracle_llm):
    teacher, student = _answers([
        ("What is 23 + 72?", "", "95", "95"),
        ("Sort the numbers in the input in ascending order.", "5, 3, 9", "3, 5, 9", "9"),
    ])
    records = score_pairs(oracle_llm("referee"), PromptTemplate.load(PROMPTS / "referee.yaml"), teacher, student, 1)
    same, wrong = records
    # The oracle adds +1 to whichever answer is shown first: each order alone is biased...
    assert same["orders"][0]["teacher_score"] == same["orders"][0]["student_score"] + 1
    assert same["orders"][1]["student_score"] == same["orders"][1]["teacher_score"] + 1
    # ...the mean over both orders is not.
    assert same["gap"] == 0 and not same["failed"]
    assert wrong["gap"] >= 1 and wrong["teacher_score"] > wrong["student_score"]
    hard, easy = (f.collect().to_dicts() for f in split_hard_easy(pl.DataFrame(records), threshold=1.0))
    assert [r["id"] for r in hard] == ["q1"] and [r["id"] for r in easy] == ["q0"]
    assert hard[0]["input"] == "5, 3, 9"  # the input is carried through


class ScriptedReferee:
    """Replies in turn from a list; records the extra params of each request."""

    role = SimpleNamespace(name="referee")

    def __init__(self, replies):
        self.replies, self.seen = list(replies), []

    def complete(self, requests, desc="", ids=None, check=None):
        self.seen += [extra for _, extra in requests]
        return [Completion(self.replies.pop(0), "stop", False) for _ in requests]


def test_unparseable_replies_are_retried_then_counted_as_failures():
    teacher, student = _answers([("Say hi please now.", "", "hi", "hello")])
    template = PromptTemplate.load(PROMPTS / "referee.yaml")
    referee = ScriptedReferee(["Assistant 1: 9\nAssistant 2: 4", "no scores here",  # attempt 1
                               "still nothing"])  # attempt 2, student-first order
    [record] = score_pairs(referee, template, teacher, student, parse_retries=1)
    assert record["failed"] and record["gap"] is None and record["teacher_score"] is None
    assert record["orders"][1]["attempts"] == 2 and "unparseable" in record["orders"][1]["error"]
    assert referee.seen == [{}, {}, {"seed": 1}]  # the retry is a new request, not a cache hit
    assert [f.collect().height for f in split_hard_easy(pl.DataFrame([record]), 1.0)] == [0, 0]
    with pytest.raises(RuntimeError, match="referee failed on 1 of 1 pairs"):
        check_failure_rate("referee", "pair", failed_verdicts([record]), 1, 0.5, "discrimination.max_referee_failure_rate")

    referee = ScriptedReferee(["Assistant 1: 9\nAssistant 2: 4", "nothing", "Assistant 1: 5\nAssistant 2: 8"])
    [record] = score_pairs(referee, template, teacher, student, parse_retries=1)
    assert not record["failed"] and record["teacher_score"] == 8.5 and record["student_score"] == 4.5


def test_answers_must_pair_one_to_one():
    teacher, student = _answers([("A b c d.", "", "x", "y"), ("E f g h.", "", "x", "y")])
    referee = ScriptedReferee([])
    for t, s in ((teacher, student[:1]), (teacher, student + student[:1]), (teacher[:1] * 2, student[:1])):
        with pytest.raises(ValueError, match="cover different instructions"):
            score_pairs(referee, PromptTemplate.load(PROMPTS / "referee.yaml"), t, s, parse_retries=0)


def test_split_threshold_is_inclusive():
    rec = lambda i, t, s: {"id": i, "instruction": "x y z w", "input": "", "teacher_score": t, "student_score": s,
                           "gap": t - s, "failed": False, "orders": []}
    hard, easy = split_hard_easy(pl.DataFrame([rec("a", 9, 8), rec("b", 9, 8.5), rec("c", 5, 9)]), threshold=1.0)
    assert hard.collect()["id"].to_list() == ["a"] and easy.collect()["id"].to_list() == ["b", "c"]


def test_streaming_split_matches_split_hard_easy(tmp_path):
    from lionflow.artifacts import read_jsonl, write_jsonl
    from lionflow.discrimination import write_split_hard_easy

    order = {"first": "teacher", "raw": "r", "attempts": 1, "teacher_score": 5, "student_score": 5, "error": None}
    records = [{"id": str(i), "instruction": "x y z w", "input": "", "teacher_score": t, "student_score": s,
                "gap": None if t is None else t - s, "failed": t is None, "orders": [order, {**order, "first": "student"}]}
               for i, (t, s) in enumerate([(9, 8), (9, 8.5), (5, 9), (None, None)])]  # the last: a referee failure
    write_jsonl(tmp_path / "scores.jsonl", records, "referee_score")
    counts = write_split_hard_easy(tmp_path / "scores.jsonl", 1.0, tmp_path / "hard.jsonl", tmp_path / "easy.jsonl")
    assert counts == (1, 2, 1)
    keep = ("id", "instruction", "input", "teacher_score", "student_score", "gap")
    assert read_jsonl(tmp_path / "hard.jsonl", "scored_instruction") == [{k: records[0][k] for k in keep}]
    assert read_jsonl(tmp_path / "easy.jsonl", "scored_instruction") == [{k: r[k] for k in keep} for r in records[1:3]]


def _verdict(first, t, s, error=None):
    return {"first": first, "raw": None if t is None else f"Assistant 1: {t}\nAssistant 2: {s}", "attempts": 1,
            "teacher_score": t, "student_score": s, "error": error}


def _record(i, teacher_first, student_first):
    orders = [_verdict("teacher", *teacher_first), _verdict("student", *student_first)]
    failed = any(o["teacher_score"] is None for o in orders)
    ts = None if failed else (orders[0]["teacher_score"] + orders[1]["teacher_score"]) / 2
    ss = None if failed else (orders[0]["student_score"] + orders[1]["student_score"]) / 2
    return {"id": f"p{i}", "instruction": "Do it.", "input": "", "orders": orders, "teacher_score": ts,
            "student_score": ss, "gap": None if failed else ts - ss, "failed": failed}


UNPARSEABLE = (None, None, "unparseable reply: no 'Assistant 1: <score>' and 'Assistant 2: <score>' lines")
TIMEOUT = (None, None, "timeout after 5 retries")
# (teacher, student) scores with the teacher's answer shown first, then with the student's shown first
RELIABILITY_PAIRS = [
    ((8, 6), (7, 7)),  # teacher wins / tie: disagree; averaged gap 1 (hard), student-first alone: 0 (easy)
    ((9, 3), (8, 4)),  # teacher both: agree; gap 5 hard either way
    ((5, 6), (4, 7)),  # student both: agree; easy
    ((6, 6), (6, 6)),  # tie both: agree; two tied verdicts
    ((7, 5), (5, 6)),  # teacher / student: disagree; averaged 0.5 (easy), teacher-first alone: 2 (hard)
    ((8, 2), UNPARSEABLE),  # failed pair: one unparseable verdict
    (TIMEOUT, TIMEOUT),  # failed pair: two failed requests
]


def test_referee_reliability_figures_computed_by_hand(tmp_path):
    from lionflow.artifacts import write_jsonl
    from lionflow.discrimination import referee_reliability
    from lionflow.frames import scan_frame

    write_jsonl(tmp_path / "scores.jsonl", [_record(i, *p) for i, p in enumerate(RELIABILITY_PAIRS)], "referee_score")
    got = referee_reliability(scan_frame(tmp_path / "scores.jsonl", "referee_score"), threshold=1.0,
                              min_order_agreement=0.65)
    assert got["pairs"] == 7 and got["scored"] == 5
    assert got["order_agreement"] == 0.6  # pairs 2, 3, 4 of 5
    # first shown minus second shown, 10 verdicts: 2, 0 | 6, -4 | -1, 3 | 0, 0 | 2, 1 -> 9 / 10
    assert got["position_bias"] == 0.9
    assert got["tie_rate"] == 0.3  # 3 of 10 verdicts
    assert got["label_flips"] == {"teacher_first": 0.2, "student_first": 0.2, "either": 0.4}
    assert got["failure_rate"] == {"pairs": round(2 / 7, 4), "unparseable": round(1 / 14, 4),
                                   "request": round(2 / 14, 4)}
    assert "60.0%" in got["warning"] and "discrimination.min_order_agreement=65%" in got["warning"]
    assert referee_reliability(scan_frame(tmp_path / "scores.jsonl", "referee_score"), 1.0, 0.6)["warning"] is None
    # the threshold moves the labels: at 3 only pair 2 is hard, and no single order disagrees with it
    assert referee_reliability(scan_frame(tmp_path / "scores.jsonl", "referee_score"), 3.0, 0.6)["label_flips"] == {
        "teacher_first": 0.0, "student_first": 0.0, "either": 0.0}


def test_referee_reliability_without_scored_pairs():
    from lionflow.discrimination import referee_reliability
    from lionflow.frames import records_frame

    got = referee_reliability(records_frame([_record(0, TIMEOUT, UNPARSEABLE)], "referee_score"), 1.0, 0.65)
    assert got["pairs"] == 1 and got["scored"] == 0 and got["warning"] is None
    assert got["order_agreement"] is got["position_bias"] is got["tie_rate"] is None
    assert got["failure_rate"] == {"pairs": 1.0, "unparseable": 0.5, "request": 0.5}
