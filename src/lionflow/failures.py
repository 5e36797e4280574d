"""One failure policy. The LLM client returns a request that failed for good as a value
(`LLMFailure`) and never decides a stage's fate; each stage applies its one configured rate
through `check_failure_rate`, and checks its row counts with `check_rows` when it writes.

Rates: the teacher and the generator `llm.failure_tolerance`; the referee
`discrimination.max_referee_failure_rate`; the judge `eval.judge.max_failure_rate`.
"""
from __future__ import annotations

import collections


class TooManyFailures(RuntimeError):
    """More of a stage's requests failed for good than its configured rate allows."""


def check_failure_rate(stage: str, what: str, failed: list[dict], total: int, max_rate: float, key: str) -> int:
    """failed: {id, kind, error} of each failed item out of `total` {what}s. Raises TooManyFailures
    naming the stage, the count, the rate (its config key) and examples by kind; returns the count."""
    if total and len(failed) / total > max_rate:
        kinds = collections.Counter(f["kind"] for f in failed)
        first = {}
        for f in failed:
            first.setdefault(f["kind"], f)
        examples = "; ".join(f"{kind} ({f['id']}): {f['error']}" for kind, f in first.items())
        raise TooManyFailures(
            f"{stage} failed on {len(failed)} of {total} {what}s ({len(failed) / total:.1%}), above "
            f"{key}={max_rate:.1%} ({', '.join(f'{n} x {k}' for k, n in kinds.most_common())}). Examples: {examples}. "
            "Answers received are cached: a rerun pays only for the rest.")
    return len(failed)


def check_rows(stage: str, n_in: int, n_out: int, n_failed: int) -> None:
    """Records in = records out + recorded failures, or an error naming the stage."""
    if n_in != n_out + n_failed:
        raise ValueError(f"{stage}: {n_in} records in but {n_out} written and {n_failed} recorded as failed: "
                         f"{n_in - n_out - n_failed} lost (a bug; nothing was written)")
