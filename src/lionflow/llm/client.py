"""One role's client: `LLM.complete(requests)`, whatever the way of sending.

The role's configuration (lionflow.llm.config) says how its requests go: online (lionflow.llm.online:
every call through the real `openai` client, claims, limits, retries, budget), through the Batch API
(lionflow.llm.batch), or, with `llm.offline: true`, not at all. All three share one request pipeline
(lionflow.llm.pipeline: count, cache key, cache, de-duplication, claims) and one bookkeeping
(lionflow.llm.bookkeeping: the response cache, the stats, the run's ledger). A request that still
fails becomes an `LLMFailure` value naming the role, the endpoint and the request: the stage decides
(`lionflow.failures`), and nothing placeholder-like is ever returned as text.

`llm.offline: true` sends nothing: every answer comes from the cache, and a request that is
not there fails at once (`OfflineMiss`, naming the role, the instruction and the cache key).
Every paid answer records the model name and `system_fingerprint` the endpoint returned; a
stage reports the set it saw (`served_by` in llm_stats), and a change within the run (in this
stage or in the run's ledger) is a warning, or an error (`TeacherChanged`) with
`llm.pin_fingerprint: true`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from .batch import BatchSender
from .bookkeeping import Books, Completion, LLMFailure, OfflineMiss, Stats, describe_request
from .cache import ResponseCache
from .config import Role
from .online import OnlineSender
from .pipeline import Dispatch


class Sender(Protocol):
    """A way to send: answers (or failures) for `requests`, in order, booked in the role's Books."""

    def complete(self, requests: list[tuple[list[dict], dict]], desc: str,
                 ids: list[str] | None, check=None) -> list[Completion | LLMFailure]: ...


class CacheOnly:
    """llm.offline: every answer from the cache; the first request not there fails at once."""

    def __init__(self, books: Books):
        self.books = books

    def complete(self, requests, desc: str, ids=None, check=None) -> list[Completion]:
        books, started = self.books, time.monotonic()
        call = Dispatch(books, requests, ids)
        for key in call.misses():
            request = call.bodies[key]
            rid = request.rid if ids else f"#{request.index} of this call"
            raise OfflineMiss(
                f"llm.offline is true and the {books.role.name} request for instruction {rid} is not in the "
                f"cache {books.cache.dir} (cache key {key}; {describe_request(key, request.messages)}). Nothing was "
                "sent; set llm.offline: false to pay for the requests missing.")
        books.stats.wall_s += time.monotonic() - started
        return call.results


@dataclass
class LLM:
    """One role's client: `complete(requests)` answers a batch, cached and deduplicated run-wide."""

    role: Role
    cache: ResponseCache
    stats: Stats = field(default_factory=Stats)
    transport: object = None   # a factory of the in-process transport of a builtin:// endpoint (online.make_client)

    def __post_init__(self):
        self.books = Books(self.role, self.cache, self.stats)
        self.sender: Sender = (CacheOnly(self.books) if self.role.offline else
                               BatchSender(self.books) if self.role.mode == "batch" else
                               OnlineSender(self.books, self.transport))

    @property
    def ledger(self):
        return self.books.ledger

    @property
    def presence(self):
        return self.books.presence

    def key(self, messages: list[dict], extra: dict | None = None) -> str:
        """The cache key of a request (messages, extra params over the role's)."""
        return self.books.key(messages, self.books.params(extra or {}))

    def complete(self, requests: list[tuple[list[dict], dict]], desc: str = "",
                 ids: list[str] | None = None, check=None) -> list[Completion | LLMFailure]:
        """requests: (messages, extra params) pairs; extra params override the role's (e.g. seed).
        ids: what each request is for (an instruction id), named in errors. check: Completion -> the
        kind of what is wrong with a paid answer the stage cannot use (None: usable), for the
        circuit breaker (lionflow.llm.breaker; online mode): the first attempts all failing the
        same way, HTTP errors and unreadable replies included, raise CircuitOpen.

        Raises BudgetExceeded (after the requests in flight are answered and cached) when the
        next request could pass `llm.budget_usd`, OfflineMiss (offline) when
        a request is not cached, TeacherChanged (pin_fingerprint) when the model answering changed.
        """
        results = self.sender.complete(requests, desc or self.role.name, ids, check)
        self.books.note_damage()
        self.books.check_served()
        return results
