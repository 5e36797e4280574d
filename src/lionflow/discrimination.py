"""Discrimination: the referee scores teacher vs student answers in both orders; hard/easy split.

Each (teacher, student) pair is judged twice, once with each answer in the first position, and
each model's score is the mean of its two scores, which cancels the referee's position bias.
A reply whose score lines cannot be parsed is asked again (with a new `seed`, so that a cached
bad reply is not simply returned); after `parse_retries` it is recorded as a failure and the
pair is excluded from the split - never averaged in as a number.
"""

from __future__ import annotations

import logging
import re
import statistics

from .artifacts import JsonlWriter, iter_jsonl
from .llm import LLM, LLMFailure
from .prompts import PromptTemplate

log = logging.getLogger(__name__)

# "Assistant 1: 7", also "**Assistant 1:** 7.5", "Assistant 2 score: 8/10".
_SCORE_LINE = re.compile(
    r"^[\s*#>-]*assistant\s*([12])\b[^\n\d]{0,20}?[:=]\s*\**\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*\**\s*\.?\s*$",
    re.IGNORECASE | re.MULTILINE,
)
ORDERS = ("teacher", "student")  # which answer is shown first


def parse_scores(reply: str) -> tuple[float, float]:
    """The scores of assistant 1 and 2 from the last score line of each; ValueError if unusable."""
    found: dict[str, float] = {}
    for number, value in _SCORE_LINE.findall(reply or ""):
        found[number] = float(value)  # later lines win: the verdict comes after the explanation
    if set(found) != {"1", "2"}:
        raise ValueError("no 'Assistant 1: <score>' and 'Assistant 2: <score>' lines")
    for number, value in found.items():
        if not 1 <= value <= 10:
            raise ValueError(f"score of assistant {number} is {value}, outside 1-10")
    return found["1"], found["2"]


def score_pairs(referee: LLM, template: PromptTemplate, teacher: list[dict], student: list[dict],
                parse_retries: int) -> list[dict]:
    """Referee-score records (schema `referee_score`), one per instruction, in pool order."""
    student_by_id = {s["id"]: s for s in student}
    missing = [t["id"] for t in teacher if t["id"] not in student_by_id]
    if missing or len(student) != len(teacher):
        raise ValueError(f"teacher and student answers cover different instructions (e.g. {missing[:3]})")

    verdicts: dict[tuple[str, str], dict] = {}
    pending = [(t, first) for t in teacher for first in ORDERS]
    for attempt in range(1 + parse_retries):
        if not pending:
            break
        requests = []
        for t, first in pending:
            s = student_by_id[t["id"]]
            a1, a2 = (t["answer"], s["answer"]) if first == "teacher" else (s["answer"], t["answer"])
            messages = template.messages(instruction=t["instruction"], input=t["input"], answer_1=a1, answer_2=a2)
            requests.append((messages, {"seed": attempt} if attempt else {}))
        replies = referee.complete(requests, desc=f"referee (attempt {attempt + 1})")
        still_pending = []
        for (t, first), reply in zip(pending, replies):
            verdict = {"first": first, "raw": None, "attempts": attempt + 1,
                       "teacher_score": None, "student_score": None, "error": None}
            if isinstance(reply, LLMFailure):
                verdict["error"] = reply.error  # the client already retried transient errors
            else:
                verdict["raw"] = reply.content
                try:
                    s1, s2 = parse_scores(reply.content)
                    verdict["teacher_score"], verdict["student_score"] = (s1, s2) if first == "teacher" else (s2, s1)
                except ValueError as e:
                    verdict["error"] = f"unparseable reply: {e}"
                    still_pending.append((t, first))
            verdicts[t["id"], first] = verdict
        pending = still_pending

    records = []
    for t in teacher:
        orders = [verdicts[t["id"], first] for first in ORDERS]
        failed = any(o["teacher_score"] is None for o in orders)
        ts = None if failed else statistics.fmean(o["teacher_score"] for o in orders)
        ss = None if failed else statistics.fmean(o["student_score"] for o in orders)
        records.append({"id": t["id"], "instruction": t["instruction"], "input": t["input"], "orders": orders,
                        "teacher_score": ts, "student_score": ss, "gap": None if failed else ts - ss,
                        "failed": failed})
    return records


def check_failure_rate(records: list[dict], max_rate: float) -> int:
    """Number of failed pairs; RuntimeError when their share exceeds `max_rate`."""
    failed = [r for r in records if r["failed"]]
    if records and len(failed) / len(records) > max_rate:
        examples = "; ".join(f"{r['id']}: {next(o['error'] for o in r['orders'] if o['error'])}" for r in failed[:3])
        raise RuntimeError(
            f"referee failed on {len(failed)} of {len(records)} pairs ({len(failed) / len(records):.1%}), above "
            f"discrimination.max_referee_failure_rate={max_rate:.1%}. Examples: {examples}"
        )
    return len(failed)


def split_hard_easy(records: list[dict], threshold: float) -> tuple[list[dict], list[dict]]:
    """hard: teacher - student >= threshold; easy: the rest (the student may win). Failures excluded."""
    hard, easy = [], []
    for r in records:
        if r["failed"]:
            continue
        item = {k: r[k] for k in ("id", "instruction", "input", "teacher_score", "student_score", "gap")}
        (hard if r["gap"] >= threshold else easy).append(item)
    return hard, easy


def write_split_hard_easy(scores_path, threshold: float, hard_path, easy_path) -> tuple[int, int, int]:
    """`split_hard_easy` file to file, streaming the scores (the cache pool can be 70K+ pairs).

    Returns the counts (hard, easy, excluded as referee failures).
    """
    total = 0
    with JsonlWriter(hard_path, "scored_instruction") as hard, JsonlWriter(easy_path, "scored_instruction") as easy:
        for total, record in enumerate(iter_jsonl(scores_path, "referee_score"), 1):
            for out, items in zip((hard, easy), split_hard_easy([record], threshold)):
                for item in items:
                    out.write(item)
    return hard.count, easy.count, total - hard.count - easy.count
