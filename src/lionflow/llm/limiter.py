"""Client-side rate limits of one endpoint: token buckets for requests and tokens per minute.

Tokens are estimated before a call (`estimate_prompt_tokens` + the expected completion) and
held while it is in flight; the true usage is booked after, so the long-run rate follows what
the provider counts. A bucket holds `burst_s` seconds of its rate; we keep it below the
provider's (which typically enforces per-minute limits over about a second) so that arrival
jitter never tips the provider into 429s. A 429's Retry-After pauses every request of the
endpoint, not only the one that was told.

The limits are the endpoint's, for the whole run: with a `RateShare` (lionflow.llm.rate_share)
each job's buckets run at 1/N of them, N = the jobs sending to the endpoint now (re-counted
every REFRESH_S), and a Retry-After pauses every job.
"""

from __future__ import annotations

import asyncio
import time

from .rate_share import REFRESH_S, RateShare


def estimate_prompt_tokens(messages: list[dict]) -> int:
    """Prompt tokens, estimated from characters (~4 per token for English, as providers estimate)."""
    chars = 0
    for m in messages:
        content = m.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            chars += sum(len(p.get("text", "")) for p in content if isinstance(p, dict))
    return chars // 4 + 4 * len(messages) + 1


class TokenBucket:
    """`per_minute` units per minute, at most `burst_s` seconds of them at once.

    `acquire(n)` waits (first come, first served) until n units are free and holds them; a
    request bigger than the bucket waits for a full bucket and leaves it in debt.
    `settle(held, used)` releases what was held and spends what was really used, so an
    estimate only delays, never loses, capacity.
    """

    def __init__(self, per_minute: float, burst_s: float = 0.5):
        self.burst_s = burst_s
        self.set_rate(per_minute)
        self.level = self.capacity        # what the provider's bucket would hold
        self.held = 0.0                   # estimates of requests in flight
        self.t = time.monotonic()
        self._lock: asyncio.Lock | None = None
        self._loop = None

    def set_rate(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate * self.burst_s)
        if hasattr(self, "level"):
            self.level = min(self.level, self.capacity)

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    async def acquire(self, amount: float) -> None:
        loop = asyncio.get_running_loop()
        if self._loop is not loop:  # LLM.complete runs one event loop per call; the level carries over
            self._lock, self._loop = asyncio.Lock(), loop
        async with self._lock:
            while True:
                self._refill(time.monotonic())
                wait = (min(amount, self.capacity) - (self.level - self.held)) / self.rate
                if wait <= 0:
                    self.held += amount
                    return
                await asyncio.sleep(wait)

    def settle(self, held: float, used: float) -> None:
        self._refill(time.monotonic())
        self.held -= held
        self.level -= used


class EndpointLimiter:
    """RPM and TPM buckets of one endpoint (either may be absent), and a pause after a 429.

    With `share`, the buckets hold this job's share of the endpoint's limits (see RateShare).
    """

    def __init__(self, rpm: float | None = None, tpm: float | None = None, burst_s: float = 0.5,
                 share: RateShare | None = None):
        self.rpm, self.tpm = rpm, tpm
        self.requests = TokenBucket(rpm, burst_s) if rpm else None
        self.tokens = TokenBucket(tpm, burst_s) if tpm else None
        self.paused_until = 0.0
        self.share = share if (rpm or tpm) else None
        self.members = 1
        self._synced_at = -1e9
        self._start_at = 0.0

    async def _sync(self) -> None:
        """Join the endpoint's senders on first use; re-count them (and read a shared pause) every REFRESH_S."""
        now = time.monotonic()
        if now - self._synced_at >= REFRESH_S:
            self._synced_at = now
            if not self.share.joined:
                members = self.share.join()
                if members > 1:   # others are sending: hold until they have seen us and lowered their rate
                    self._start_at = now + 1.5 * REFRESH_S
            else:
                members = self.share.members()
            self._set(members)
            left = self.share.pause_left()
            if left > 0:
                self.paused_until = max(self.paused_until, now + left)
        if (wait := self._start_at - time.monotonic()) > 0:
            await asyncio.sleep(wait)

    def _set(self, members: int) -> None:
        self.members = members
        if self.requests:
            self.requests.set_rate(self.rpm / members)
        if self.tokens:
            self.tokens.set_rate(self.tpm / members)

    async def acquire(self, estimated_tokens: int) -> None:
        if self.share:
            await self._sync()
        while (wait := self.paused_until - time.monotonic()) > 0:
            await asyncio.sleep(wait)
        if self.requests:
            await self.requests.acquire(1)
            self.requests.settle(1, 1)
        if self.tokens:
            await self.tokens.acquire(estimated_tokens)

    def settle_tokens(self, estimated_tokens: int, used_tokens: int) -> None:
        if self.tokens:
            self.tokens.settle(estimated_tokens, used_tokens)

    def pause(self, seconds: float) -> None:
        self.paused_until = max(self.paused_until, time.monotonic() + seconds)
        if self.share:
            self.share.post_pause(seconds)

    def close(self) -> None:
        """Stop sending: the other jobs get this one's share back."""
        if self.share:
            self.share.leave()
            self._synced_at = -1e9
