"""The circuit breaker of one LLM stage (llm.circuit_breaker): a stage failing the same way stops paying.

Every attempt a stage sends ends as an answer or a failure of some kind (an HTTP status, a timeout, a
reply the client cannot read, or an answer the stage's own check rejects: a referee reply without
score lines, a teacher answer cut at max_tokens). When the first `first_n` attempts of a call all
failed with the same kind, the breaker opens: the call cancels what it has in flight, sends nothing
more and raises `CircuitOpen`, naming the kind, the role, its endpoint and URL, and one example reply.
Once an attempt succeeds (or the first attempts fail in different ways) the breaker stands down and
the stage's failure rate decides (lionflow.failures). Independently, a call whose own requests make
no progress (no answer arrives) for `no_progress_s` seconds is stopped the same way. 429 answers are
pacing, not failures, and are not counted.
"""

from __future__ import annotations

import time

from ..failures import TooManyFailures


class CircuitOpen(TooManyFailures):
    """A stage stopped early: its first requests all failed the same way, or it made no progress."""


class Breaker:
    def __init__(self, where: str, first_n: int, no_progress_s: float | None):
        self.where, self.first_n, self.no_progress_s = where, first_n, no_progress_s
        self.kinds: list[str] = []
        self.example = self.last_error = ""
        self.armed = first_n > 0
        self.last_progress = time.monotonic()
        self.tripped: CircuitOpen | None = None

    def answered(self) -> None:
        """An attempt got a usable answer: the stage works, the breaker stands down."""
        self.armed = False
        self.last_progress = time.monotonic()

    def failed(self, kind: str, example: str) -> CircuitOpen | None:
        """An attempt failed with `kind` (`example`: the start of the reply or error); the CircuitOpen when
        that opens the breaker."""
        self.last_error = example
        if self.tripped or not self.armed:
            return self.tripped
        if self.kinds and kind != self.kinds[0]:
            self.armed = False       # failing in different ways: not one systematic fault
            return None
        self.kinds.append(kind)
        self.example = self.example or example
        if len(self.kinds) >= self.first_n:
            self.tripped = CircuitOpen(
                f"{self.where}: the first {len(self.kinds)} requests all failed the same way ({kind}); stopped "
                f"before paying for more (llm.circuit_breaker.first_n={self.first_n}). Example reply: "
                f"{' '.join(self.example.split())[:300]!r}. Answers received are cached: a rerun pays only for the rest.")
        return self.tripped

    def stalled(self) -> CircuitOpen | None:
        """The CircuitOpen when no answer arrived for no_progress_s (called while requests are in flight)."""
        if self.tripped or self.no_progress_s is None:
            return self.tripped
        idle = time.monotonic() - self.last_progress
        if idle >= self.no_progress_s:
            self.tripped = CircuitOpen(
                f"{self.where}: no answer arrived for {idle:.0f} s while requests were in flight; stopped "
                f"(llm.circuit_breaker.no_progress_s={self.no_progress_s:g})"
                + (f". Last failure: {' '.join(self.last_error.split())[:300]!r}" if self.last_error else "")
                + ". Answers received are cached: a rerun pays only for the rest.")
        return self.tripped
