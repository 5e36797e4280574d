"""Imitation: the teacher's answers to a pool (the student's fine-tuning lives in lionflow.student)."""

from __future__ import annotations

from .llm import LLM, LLMFailure
from .prompts import PromptTemplate


def teacher_answers(teacher: LLM, template: PromptTemplate, pool: list[dict]) -> list[dict]:
    """Answer records (schema `answer`) for every pool instruction, or RuntimeError naming failures.

    Answers that did arrive are already in the response cache, so a rerun pays only for the
    failed requests; no failed request ever turns into answer text.
    """
    requests = [(template.messages(instruction=r["instruction"], input=r["input"]), {}) for r in pool]
    replies = teacher.complete(requests, desc="teacher", ids=[r["id"] for r in pool])
    failed = [(r["id"], reply.error) for r, reply in zip(pool, replies) if isinstance(reply, LLMFailure)]
    if failed:
        shown = "; ".join(f"{i}: {e}" for i, e in failed[:3])
        raise RuntimeError(f"{len(failed)} of {len(pool)} teacher requests failed after retries ({shown}). "
                           "Answers received are cached: a rerun pays only for the failed ones.")
    return [{"id": r["id"], "instruction": r["instruction"], "input": r["input"], "answer": reply.content,
             "model": teacher.role.model, "finish_reason": reply.finish_reason} for r, reply in zip(pool, replies)]
