"""Open-ended evaluation as in the paper: a judge scores student vs reference answers 1-10.

The judge (GPT-4 in the paper) sees each question with the reference model's answer (ChatGPT
in the paper; the teacher by default) and the student's, rates both 1-10, and is asked twice
with the answers in swapped positions. The relative score of a set of questions is
    100 * (sum of the student's scores) / (sum of the reference's scores)
computed separately for each order - the paper's two settings, reference first and student
first - and averaged. A question whose verdict cannot be parsed in either order (after
retries) is left out of both orders' totals, so both settings cover the same questions, and it
is counted in `n_failed`: failures are shown, never silently dropped.

The both-orders requests, retries and reply parsing are the referee's (lionflow.discrimination):
one parser, one retry policy. Only the names differ: the referee's "teacher" is our "reference".
"""

from __future__ import annotations

import copy
import statistics
from collections import defaultdict

from .artifacts import iter_jsonl
from .discrimination import score_pairs
from .llm import LLM
from .prompts import PromptTemplate

ORDERS = {"reference": "reference_first", "student": "student_first"}  # `first` -> result key


def load_questions(path, limit: int | None = None) -> list[dict]:
    """The evaluation questions (schema `eval_question`), the first `limit` of them if given."""
    questions, seen = [], set()
    for lineno, q in iter_jsonl(path, "eval_question", numbered=True):  # the file's line numbers
        if q["id"] in seen:
            raise ValueError(f"{path}:{lineno}: field 'id': duplicate question id {q['id']!r}")
        seen.add(q["id"])
        questions.append(q)
    return [{"id": q["id"], "category": q["category"], "instruction": q["instruction"], "input": q.get("input") or ""}
            for q in questions[:limit]]


def role_configs(llm: dict, judge: dict) -> dict:
    """An `llm` config holding the `judge` and `reference` roles, filled in from their defaults.

    The judge falls back to the referee's endpoint, model and params; the reference model is
    the teacher (endpoint, model, prompt, params) unless `eval.judge.reference` names another.
    """
    referee = llm["referee"]
    judge_role = {"endpoint": judge.get("endpoint") or referee["endpoint"],
                  "model": judge.get("model") or referee["model"],
                  "params": judge["params"] if judge["params"] is not None else referee["params"],
                  "prompt": judge["prompt"], "mode": judge["mode"]}
    reference_role = copy.deepcopy(judge.get("reference") or llm["teacher"])
    for key, role in (("eval.judge.endpoint" if judge.get("endpoint") or judge.get("model") else
                       "llm.referee.endpoint (the judge's default)", judge_role),
                      ("eval.judge.reference.endpoint" if judge.get("reference") else
                       "llm.teacher.endpoint (the reference's default)", reference_role)):
        if role["endpoint"] not in llm["endpoints"]:
            raise ValueError(f"config: {key}={role['endpoint']!r} is not one of llm.endpoints "
                             f"({', '.join(llm['endpoints'])})")
    # Run-wide settings (cache, ledger and budget, offline replay, fingerprint pin, ...) carry over.
    shared = {k: v for k, v in llm.items() if k not in ("teacher", "referee", "generator")}
    return {**shared, "judge": judge_role, "reference": reference_role}


def judge_answers(judge: LLM, template: PromptTemplate, questions: list[dict], reference: list[dict],
                  student: list[dict], parse_retries: int) -> list[dict]:
    """Judge-score records (schema `judge_score`), one per question, in question order."""
    by_id = {q["id"]: q for q in questions}
    for name, answers in (("reference", reference), ("student", student)):
        ids = [a["id"] for a in answers]
        if sorted(ids) != sorted(by_id):
            raise ValueError(f"the {name} answers do not cover the evaluation questions one to one")
    # The referee's "teacher" slot holds the reference answer.
    verdicts = score_pairs(judge, template, teacher=reference, student=student, parse_retries=parse_retries)
    records = []
    for v in verdicts:
        orders = [{"first": "reference" if o["first"] == "teacher" else "student", "raw": o["raw"],
                   "attempts": o["attempts"], "reference_score": o["teacher_score"],
                   "student_score": o["student_score"], "error": o["error"]} for o in v["orders"]]
        q = by_id[v["id"]]
        records.append({"id": q["id"], "category": q["category"], "instruction": q["instruction"],
                        "input": q["input"], "orders": orders, "failed": v["failed"]})
    return records


def _relative(student_total: float, reference_total: float, n: int) -> float | None:
    return 100.0 * student_total / reference_total if n and reference_total > 0 else None


def relative_cell(records: list[dict]) -> dict:
    """Totals and relative scores of a set of judged questions (schema `judge_result` cell)."""
    scored = [r for r in records if not r["failed"]]
    cell = {"n_questions": len(records), "n_scored": len(scored), "n_failed": len(records) - len(scored)}
    for first, key in ORDERS.items():
        verdicts = [next(o for o in r["orders"] if o["first"] == first) for r in scored]
        student_total = float(sum(o["student_score"] for o in verdicts))
        reference_total = float(sum(o["reference_score"] for o in verdicts))
        n_failed = sum(1 for r in records for o in r["orders"] if o["first"] == first and o["student_score"] is None)
        cell[key] = {"n_failed": n_failed, "student_total": student_total, "reference_total": reference_total,
                     "relative": _relative(student_total, reference_total, len(scored))}
    both = [cell[key]["relative"] for key in ORDERS.values()]
    cell["mean_relative"] = None if None in both else statistics.fmean(both)
    return cell


def relative_scores(records: list[dict], *, checkpoint: str, judge_model: str, reference_model: str) -> dict:
    """The open-ended result of one checkpoint (schema `judge_result`): overall and per category."""
    by_category: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_category[r["category"]].append(r)
    return {"checkpoint": checkpoint, "judge_model": judge_model, "reference_model": reference_model,
            "overall": relative_cell(records),
            "by_category": {c: relative_cell(rs) for c, rs in sorted(by_category.items())}}
