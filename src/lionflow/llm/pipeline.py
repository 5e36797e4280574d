"""The request pipeline every way of sending shares: what happens to a call's requests around the sending.

A `Dispatch` is one call of `LLM.complete`. Its front end (`misses`): each request counted, its
cache key, the persistent ResponseCache (a hit costs nothing), identical requests of the call
answered by one. Each request left is then claimed run-wide (`claim`, lionflow.llm.claims): ours
to send, answered meanwhile by another job, or held by another live job, whose answer is waited
for and read from the cache the moment it lands (`poll_held`, `freed`, `wait_held`); a key its
holder releases unanswered or leaves behind by dying comes back to us. Our claims are released
when a send ends (`release`) and, whatever happens, when the call does (`release_all`).

The senders only send: online (lionflow.llm.online) sends each key of ours as it comes, batch
(lionflow.llm.batch) sends all of them as one batch, offline (lionflow.llm.client.CacheOnly)
sends nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import NamedTuple

from .bookkeeping import Books, Completion, LLMFailure
from .claims import POLL_S, Claims


class Request(NamedTuple):
    messages: list[dict]
    params: dict             # the role's parameters with the request's own over them
    rid: str | None          # what it is for (an instruction id), named in errors
    index: int               # its first place in the call


class Dispatch:
    """One call's requests: answers in order, and what the cache does not answer, sent once, run-wide."""

    def __init__(self, books: Books, requests: list[tuple[list[dict], dict]], ids: list[str] | None = None,
                 answered: Callable[[], None] | None = None):
        self.books, self.cache, self.stats = books, books.cache, books.stats
        self.requests, self.ids = requests, ids
        self.results: list[Completion | LLMFailure | None] = [None] * len(requests)
        self.waiting: dict[str, list[int]] = {}   # request key -> indices its one answer goes to
        self.bodies: dict[str, Request] = {}      # request key -> its request, until answered
        self.mine: dict[str, int] = {}            # request key -> generation of our claim on it
        self.held: dict[str, dict] = {}           # request key -> the other job holding its claim
        self._answered = answered                 # called once per request answered (a progress bar)
        self._claims: Claims | None = None

    # ------------------------------------------------------------------ the front end
    def misses(self) -> Iterator[str]:
        """Each request counted and keyed; one in the cache answered, one identical to an earlier one
        joined to it; yields each key left to answer, once (its request in `bodies[key]`)."""
        books, results, waiting, bodies, ids = self.books, self.results, self.waiting, self.bodies, self.ids
        for i, (messages, extra) in enumerate(self.requests):
            self.stats.requests += 1
            params = books.params(extra)
            key = books.key(messages, params)
            if key in waiting:   # identical requests at once are sent (or waited for) once
                waiting[key].append(i)
                continue
            hit = books.from_cache(key)
            if hit is not None:
                results[i] = hit
                if self._answered:
                    self._answered()
                continue
            waiting[key] = [i]
            bodies[key] = Request(messages, params, ids[i] if ids else None, i)
            yield key

    def resolve(self, key: str, result: Completion | LLMFailure | None) -> None:
        """Every request of `key` answered by `result` (None: left unanswered)."""
        self.bodies.pop(key, None)
        for i in self.waiting.pop(key, ()):
            self.results[i] = result
            if result is not None and self._answered:
                self._answered()

    def _from_other_job(self, key: str, entry: dict) -> None:
        """Another job paid for `key`: its answer, from the cache, for each request of it."""
        self.stats.cache_hits += len(self.waiting.get(key, ()))
        self.stats.shared += 1
        self.resolve(key, self.books.hit(entry))

    # ------------------------------------------------------------------ claims
    @property
    def claims(self) -> Claims:
        if self._claims is None:   # made at the first claim: offline replay never makes this process present
            self._claims = Claims(self.cache, self.books.presence)
        return self._claims

    def claim(self, key: str) -> str:
        """Claim `key` run-wide: 'mine' (ours to send; `release` it when done), 'cached' (another job
        answered it: resolved) or 'held' (another live job holds it: in `held`, until its answer comes
        or it lets go)."""
        state, info = self.claims.claim(key)
        if state == "mine":
            self.mine[key] = info
        elif state == "cached":
            self._from_other_job(key, self.cache.get(key))
        else:
            self.held[key] = info
        return state

    def release(self, key: str, answered: bool | None = None) -> None:
        """Our claim on `key` goes back (answered: whether the cache holds its answer; None: look)."""
        gen = self.mine.pop(key, None)
        if gen is not None:
            self.claims.release(key, gen, answered=key in self.cache if answered is None else answered)

    def release_all(self) -> None:
        """The call ends: every claim we still hold goes back to the other jobs."""
        for key in list(self.mine):
            self.release(key)

    # ------------------------------------------------------------------ waiting for other jobs
    def poll_held(self) -> list[str]:
        """One round of waiting for the jobs holding our keys: the answers they wrote are read (resolved);
        returns the keys their holder let go unanswered (released, or died), no longer held."""
        cache, presence = self.cache, self.books.presence
        cache.refresh(also={info["part"] for info in self.held.values()}, listing=False)
        released = set(cache.take_released())
        now, alive, freed = time.monotonic(), {}, []
        for key, info in list(self.held.items()):
            entry = cache.get(key)
            if entry is not None:
                del self.held[key]
                self._from_other_job(key, entry)
                continue
            holder = info["holder"]
            if holder not in alive:
                alive[holder] = presence.alive(info, now)
            if key in released or not alive[holder]:
                del self.held[key]
                freed.append(key)
        return freed

    async def freed(self, idle: Callable[[], None] | None = None) -> AsyncIterator[str]:
        """Wait (every POLL_S) until no key is held; yields each key its holder let go unanswered (to take
        over, which may hold it again). idle: called before each wait."""
        while self.held:
            if idle:
                idle()
            await asyncio.sleep(POLL_S)
            for key in self.poll_held():
                yield key

    def wait_held(self, every_s: float) -> list[str]:
        """Wait (blocking, every `every_s`) until no key is held; returns the keys let go unanswered."""
        let_go = []
        while self.held:
            time.sleep(every_s)
            let_go += self.poll_held()
        return let_go

    def take_over_dead(self, within_s: float, every_s: float) -> None:
        """Re-claim the held keys every `every_s` for up to `within_s`: one whose holder dies (its heartbeat
        stops within a lease) becomes ours, one answered meanwhile is resolved."""
        deadline = time.monotonic() + within_s
        while self.held and time.monotonic() < deadline:
            time.sleep(every_s)
            for key in list(self.held):
                del self.held[key]
                self.claim(key)
