"""Imitation: the teacher's answers to a pool (the student's fine-tuning lives in lionflow.student)."""

from __future__ import annotations

import collections
import re

from .failures import check_failure_rate, check_rows
from .llm import LLM, Completion, LLMFailure
from .prompts import PromptTemplate

# What an answer can be that is not worth training on (llm.answer_checks), in the order they are checked.
EXCLUDED_KINDS = ("empty", "cut", "refusal")


def answer_check(checks: dict):
    """The check of llm.answer_checks: Completion -> the kind of answer it is not worth training on ('empty':
    no text, 'cut': finish_reason length, 'refusal': finish_reason content_filter or a refusal pattern), or
    None; kinds whose policy is `keep` pass."""
    patterns = [re.compile(p, re.IGNORECASE) for p in checks["refusal_patterns"]]

    def check(reply: Completion) -> str | None:
        text = reply.content or ""
        if not text.strip():
            kind = "empty"
        elif reply.finish_reason == "length":
            kind = "cut"
        elif reply.finish_reason == "content_filter" or any(p.search(text) for p in patterns):
            kind = "refusal"
        else:
            return None
        return f"{kind} answer" if checks[kind] == "exclude" else None

    return check


def describe_excluded(kind: str, reply: Completion) -> str:
    text = " ".join((reply.content or "").split())
    return (f"{kind} (finish_reason={reply.finish_reason}, {len(reply.content or '')} characters"
            + (f": {text[:80]!r}{'...' if len(text) > 80 else ''})" if text else ")"))


def teacher_answers(teacher: LLM, template: PromptTemplate, pool: list[dict], max_failure_rate: float,
                    rate_key: str = "llm.failure_tolerance", checks: dict | None = None,
                    checks_key: str = "llm.answer_checks.max_excluded_rate") -> tuple[list[dict], list[dict]]:
    """Answer records (schema `answer`) for the pool instructions the teacher answered, and the
    failures ({id, kind, error}) of those it did not: left out of training, recorded, never
    silently dropped. More failures than `max_failure_rate` (config key `rate_key`) stop the stage.

    checks (llm.answer_checks): answers cut at max_tokens, empty, or refused are excluded too (policy
    `exclude`), recorded among the failures with kind 'cut answer', 'empty answer' or 'refusal answer';
    more of them than checks['max_excluded_rate'] (config key `checks_key`) stop the stage, and so does
    the circuit breaker when the first answers are all excluded the same way.

    Answers that did arrive are already in the response cache, so a rerun pays only for the
    failed requests; no failed request ever turns into answer text.
    """
    check = answer_check(checks) if checks else None
    requests = [(template.messages(instruction=r["instruction"], input=r["input"]), {}) for r in pool]
    replies = teacher.complete(requests, desc=teacher.role.name, ids=[r["id"] for r in pool], check=check)
    failed = [{"id": r["id"], "kind": reply.kind or "error", "error": reply.error}
              for r, reply in zip(pool, replies) if isinstance(reply, LLMFailure)]
    check_failure_rate(teacher.role.name, "request", failed, len(pool), max_failure_rate, rate_key)
    excluded, answers = [], []
    for r, reply in zip(pool, replies):
        if isinstance(reply, LLMFailure):
            continue
        kind = check(reply) if check else None
        if kind:
            excluded.append({"id": r["id"], "kind": kind, "error": f"{teacher.role.where()}: excluded from "
                             f"training: {describe_excluded(kind, reply)} (llm.answer_checks)"})
            continue
        answers.append({"id": r["id"], "instruction": r["instruction"], "input": r["input"], "answer": reply.content,
                        "model": teacher.role.model, "finish_reason": reply.finish_reason})
    if checks:
        check_failure_rate(teacher.role.name, "answer", excluded, len(pool) - len(failed), checks["max_excluded_rate"],
                           checks_key)
    check_rows(teacher.role.name, len(pool), len(answers), len(failed) + len(excluded))
    return answers, failed + excluded


def excluded_counts(failed: list[dict]) -> dict[str, int]:
    """Answers excluded per kind (every kind, 0 when none), from teacher_answers' failures."""
    counts = collections.Counter(f["kind"] for f in failed)
    return {kind: counts.get(f"{kind} answer", 0) for kind in EXCLUDED_KINDS}
