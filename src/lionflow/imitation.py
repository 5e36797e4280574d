"""Imitation: the teacher's answers to a pool (the student's fine-tuning lives in lionflow.student)."""

from __future__ import annotations

from .failures import check_failure_rate, check_rows
from .llm import LLM, LLMFailure
from .prompts import PromptTemplate


def teacher_answers(teacher: LLM, template: PromptTemplate, pool: list[dict], max_failure_rate: float,
                    rate_key: str = "llm.failure_tolerance") -> tuple[list[dict], list[dict]]:
    """Answer records (schema `answer`) for the pool instructions the teacher answered, and the
    failures ({id, kind, error}) of those it did not: left out of training, recorded, never
    silently dropped. More failures than `max_failure_rate` (config key `rate_key`) stop the stage.

    Answers that did arrive are already in the response cache, so a rerun pays only for the
    failed requests; no failed request ever turns into answer text.
    """
    requests = [(template.messages(instruction=r["instruction"], input=r["input"]), {}) for r in pool]
    replies = teacher.complete(requests, desc=teacher.role.name, ids=[r["id"] for r in pool])
    failed = [{"id": r["id"], "kind": reply.kind or "error", "error": reply.error}
              for r, reply in zip(pool, replies) if isinstance(reply, LLMFailure)]
    check_failure_rate(teacher.role.name, "request", failed, len(pool), max_failure_rate, rate_key)
    answers = [{"id": r["id"], "instruction": r["instruction"], "input": r["input"], "answer": reply.content,
                "model": teacher.role.model, "finish_reason": reply.finish_reason}
               for r, reply in zip(pool, replies) if not isinstance(reply, LLMFailure)]
    check_rows(teacher.role.name, len(pool), len(answers), len(failed))
    return answers, failed
