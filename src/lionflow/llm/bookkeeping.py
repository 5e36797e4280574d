"""Bookkeeping shared by every way of sending: the cache, the stats, the ledger, the models seen.

`Books` is what online mode, batch mode and offline replay have in common: the cache key of a
request, answers read from and written to the response cache, each paid answer booked (stats and
the run's ledger), and the model names and system_fingerprints the endpoint answered with (a
change within the run is a warning, or `TeacherChanged` with llm.pin_fingerprint).
"""

from __future__ import annotations

import collections
import logging
import math
import os
from dataclasses import dataclass, field

from .cache import ResponseCache, request_key
from .config import Role
from .ledger import Ledger
from .limiter import estimate_prompt_tokens
from .presence import Presence, holder_info

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str
    cached: bool
    model: str | None = None                # the model name the endpoint answered with
    system_fingerprint: str | None = None   # the endpoint's system_fingerprint, when it sends one


@dataclass(frozen=True)
class LLMFailure:
    error: str
    kind: str = ""      # e.g. "APIConnectionError", "BadRequestError (HTTP 400)", "empty message"


class OfflineMiss(RuntimeError):
    """llm.offline is true and a request is not in the cache."""


class TeacherChanged(RuntimeError):
    """llm.pin_fingerprint is true and the endpoint answered as another model or system_fingerprint."""


@dataclass
class Stats:
    requests: int = 0
    cache_hits: int = 0
    paid: int = 0
    failures: int = 0
    retries: int = 0
    rate_limited: int = 0          # 429 answers received (each then retried)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    wall_s: float = 0.0
    shared: int = 0                # answers another job paid for while this one waited (also in cache_hits)
    cache_damaged: int = 0         # cache records that could not be read (reported with path and line)
    served: collections.Counter = field(default_factory=collections.Counter)   # (model, fingerprint) -> answers
    warnings: list = field(default_factory=list)

    def as_dict(self, role: Role) -> dict:
        counts = {k: v for k, v in self.__dict__.items() if k not in ("served", "warnings")}
        served = [{"model": m, "system_fingerprint": fp, "answers": n}
                  for (m, fp), n in sorted(self.served.items(), key=lambda item: (item[0][0], item[0][1] or ""))]
        return {"role": role.name, "model": role.model, **counts, "cost_usd": round(self.cost_usd, 6),
                "served_by": served, "warnings": list(self.warnings)}


def changed(identities) -> bool:
    """More than one model name, or more than one system_fingerprint (None: the endpoint sent none)."""
    return len({m for m, _ in identities}) > 1 or len({fp for _, fp in identities if fp is not None}) > 1


def describe_request(key: str, messages: list[dict], rid: str | None = None) -> str:
    text = next((m.get("content") for m in reversed(messages) if isinstance(m.get("content"), str)), "")
    snippet = " ".join(text.split())
    what = f"request {key[:12]}" + (f" for {rid}" if rid is not None else "")
    return f"{what} ({snippet[:60] + '...' if len(snippet) > 60 else snippet!s})"


class Books:
    """One role's cache, stats and ledger, and the identities it was answered by."""

    def __init__(self, role: Role, cache: ResponseCache, stats: Stats):
        self.role, self.cache, self.stats = role, cache, stats
        self._presence: Presence | None = None
        self.ledger = None
        if role.ledger_dir and not role.offline:
            alive = lambda holder: self.presence.alive(holder_info(holder))
            self.ledger = Ledger(role.ledger_dir, role.budget_usd, alive=alive)
        self._completion_tokens_seen = collections.deque(maxlen=256)

    @property
    def presence(self) -> Presence:
        """This process's heartbeat under the cache directory (claims and shared limits name it)."""
        if self._presence is None or self._presence.closed:
            self._presence = Presence.of(self.cache.dir, self.role.lease_s)
        return self._presence

    def close(self) -> None:
        """The end of a call: the cache part and the ledger let go (both reopen on the next)."""
        self.cache.close()
        if self.ledger:
            self.ledger.close()

    # ------------------------------------------------------------------ requests and the cache
    def params(self, extra: dict) -> dict:
        return {**self.role.params, **extra}

    def key(self, messages, params) -> str:
        return request_key(self.role.endpoint.base_url, self.role.model, messages, params)

    def hit(self, entry: dict) -> Completion:
        """A cached answer (counted by who answered it)."""
        served = entry.get("served_model")
        if served is not None:
            self.stats.served[served, entry.get("system_fingerprint")] += 1
        return Completion(entry["content"], entry["finish_reason"], cached=True, model=served,
                          system_fingerprint=entry.get("system_fingerprint"))

    def from_cache(self, key: str) -> Completion | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        self.stats.cache_hits += 1
        return self.hit(hit)

    def book(self, usage: dict, discount: float = 1.0, served_model: str | None = None,
             system_fingerprint: str | None = None) -> None:
        """Book one paid answer: stats and ledger."""
        prompt, completion = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
        cost = self.role.price.cost(prompt, completion, discount)
        s = self.stats
        s.paid += 1
        s.prompt_tokens += prompt
        s.completion_tokens += completion
        s.cost_usd += cost
        self._completion_tokens_seen.append(completion)
        if self.ledger:
            self.ledger.record(self.role.name, self.role.model, prompt, completion, cost,
                               endpoint=self.role.endpoint.name, served_model=served_model,
                               system_fingerprint=system_fingerprint)

    def store(self, key: str, content: str, finish_reason: str, usage: dict, served_model: str | None = None,
              system_fingerprint: str | None = None) -> Completion:
        """Write a paid answer to the cache the moment it arrives (with who answered it)."""
        self.cache.put(key, {"model": self.role.model, "content": content, "finish_reason": finish_reason,
                             "usage": usage, "served_model": served_model, "system_fingerprint": system_fingerprint})
        if served_model is not None:
            before = set(self.stats.served)
            self.stats.served[served_model, system_fingerprint] += 1
            if self.role.pin_fingerprint and (served_model, system_fingerprint) not in before:
                seen = self._identities()
                if changed(seen):
                    raise TeacherChanged(self._drift_message(seen))
        return Completion(content, finish_reason, cached=False, model=served_model,
                          system_fingerprint=system_fingerprint)

    def estimate(self, messages, params) -> tuple[int, int, int | None]:
        """(prompt tokens, expected completion tokens, max completion tokens) before sending."""
        max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
        seen = self._completion_tokens_seen
        expected = math.ceil(sum(seen) / len(seen)) if seen else 256
        return estimate_prompt_tokens(messages), min(expected, max_tokens or expected), max_tokens

    def redact(self, text: str) -> str:
        """Error text with the API key (should a server echo it) replaced by the variable's name."""
        env = self.role.endpoint.api_key_env
        key = os.environ.get(env) if env else None
        return text.replace(key, f"<${env}>") if key and len(key) >= 8 else text

    # ------------------------------------------------------------------ after a call
    def note_damage(self) -> None:
        damaged = self.cache.damaged
        if len(damaged) > self.stats.cache_damaged:
            self.stats.cache_damaged = len(damaged)
            shown = "; ".join(f"{path}:{line}: {reason}" for path, line, reason in damaged[:3])
            self.stats.warnings.append(f"{len(damaged)} damaged record(s) in the LLM cache, their requests paid again "
                                       f"if asked: {shown}" + (" ..." if len(damaged) > 3 else ""))

    def check_served(self) -> None:
        """Teacher drift: a warning, or TeacherChanged with llm.pin_fingerprint."""
        seen = self._identities()
        if not changed(seen):
            return
        message = self._drift_message(seen)
        if self.role.pin_fingerprint:
            raise TeacherChanged(message)
        if message not in self.stats.warnings:
            log.warning("%s", message)
            self.stats.warnings.append(message)

    def _identities(self) -> set:
        seen = set(self.stats.served)
        if self.ledger:
            self.ledger.spent(force=True)
            seen |= self.ledger.identities.get(f"{self.role.endpoint.name}:{self.role.model}", set())
        return seen

    def _drift_message(self, seen) -> str:
        listed = ", ".join(f"{m} (system_fingerprint {fp})" for m, fp in sorted(seen, key=lambda x: (x[0], x[1] or "")))
        return (f"{self.role.where()}: the model answering as {self.role.model} changed within the run: {listed}. "
                "Answers from different model versions are mixed in this run's artifacts"
                + ("" if self.role.pin_fingerprint else "; llm.pin_fingerprint: true makes this an error") + ".")
