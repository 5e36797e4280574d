"""Async access to OpenAI-compatible endpoints for the teacher, referee and generator roles.

Every call goes through the real `openai` client. A `builtin://` endpoint (the embedded oracle)
is reached in-process through the transport given by whoever builds the client from config
(lionflow.smk.llm_for; no network, no key): this package knows no server of its own. For each request,
in order: the persistent ResponseCache (a hit costs nothing); identical requests in flight at
once are sent once; a claim on the request's cache key, so that an identical request is sent
once for the whole run, whatever other jobs ask at the same time (lionflow.llm.shared: a job
that finds a key claimed waits for the other job's answer and reads it from the cache); at
most `max_concurrency` in flight per endpoint; the endpoint's RPM/TPM token buckets, shared
with the other jobs sending to it; the budget (`Ledger`, for the run); the call, retried by tenacity on transient errors
(408/409/429/5xx, timeouts, connection errors, malformed bodies) with exponential backoff and
full jitter, or after the server's Retry-After (which also pauses the endpoint). The SDK's own
retries are off so that every attempt passes the rate limiter and is counted. Answers are
written to the cache the moment they arrive. A request that still fails becomes an
`LLMFailure` value naming the role, the endpoint and the request: the stage decides
(`lionflow.failures`), and nothing placeholder-like is ever returned as text.

`llm.offline: true` sends nothing: every answer comes from the cache, and a request that is
not there fails at once (`OfflineMiss`, naming the role, the instruction and the cache key).
Every paid answer records the model name and `system_fingerprint` the endpoint returned; a
stage reports the set it saw (`served_by` in llm_stats), and a change within the run (in this
stage or in the run's ledger) is a warning, or an error (`TeacherChanged`) with
`llm.pin_fingerprint: true`.
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tqdm import tqdm

from .cache import ResponseCache, request_key
from .ledger import BudgetExceeded, Ledger, Price
from .limiter import EndpointLimiter, estimate_prompt_tokens
from .shared import POLL_S, Claims, Presence, SharedShare, endpoint_key, holder_info

log = logging.getLogger(__name__)

BUILTIN_SCHEME = "builtin://"   # an endpoint served in-process, through a transport given to the client
RETRY_AFTER_CAP_S = 120.0   # as the SDK: a longer Retry-After is not waited for in full
_backoff = wait_random_exponential(multiplier=0.5, max=8)  # 0.5 s x 2^n, capped at 8 s, full jitter


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    api_key_env: str | None = None
    max_concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 5
    rpm: float | None = None        # requests per minute allowed by the provider
    tpm: float | None = None        # tokens per minute allowed by the provider

    @property
    def builtin(self) -> bool:
        return self.base_url.startswith(BUILTIN_SCHEME)

    def api_key(self) -> str:
        if self.builtin or not self.api_key_env:
            return "unused"  # in-process and local servers need no key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"environment variable {self.api_key_env} is not set (llm.endpoints.{self.name}.api_key_env, "
                f"the key for {self.base_url}); export the API key there"
            )
        return key


@dataclass(frozen=True)
class Role:
    name: str
    endpoint: Endpoint
    model: str
    params: dict  # sampling parameters sent with every request (temperature, max_tokens, ...)
    price: Price = Price()                # USD per million tokens (0: unknown / free)
    mode: str = "online"                  # online | batch (the OpenAI Batch API)
    budget_usd: float | None = None
    ledger_dir: str | None = None         # where spending is recorded (None: nowhere)
    batch_discount: float = 0.5           # batch price / online price
    batch_poll_s: float = 30.0            # how often a submitted batch is polled
    offline: bool = False                 # serve only from the cache, send nothing
    pin_fingerprint: bool = False         # a changed model / system_fingerprint within the run is an error
    lease_s: float = 30.0                 # a claim whose holder shows no heartbeat for this long is taken over

    @classmethod
    def from_config(cls, config: dict, role: str) -> Role:
        llm = config["llm"]
        spec = llm[role]
        ep = llm["endpoints"][spec["endpoint"]]
        endpoint = Endpoint(
            name=spec["endpoint"], base_url=ep["base_url"], api_key_env=ep.get("api_key_env"),
            max_concurrency=ep.get("max_concurrency", 16), timeout_s=ep.get("timeout_s", 120.0),
            max_retries=ep.get("max_retries", 5), rpm=ep.get("rpm"), tpm=ep.get("tpm"),
        )
        prices = llm.get("prices") or {}
        budget = llm.get("budget_usd")
        if budget is not None and spec["model"] not in prices:
            raise ValueError(f"config: llm.budget_usd is set but llm.prices has no entry for model "
                             f"{spec['model']!r} (llm.{role}.model): the cost could not be estimated")
        cache_dir = llm.get("cache_dir", ".cache/llm")
        return cls(role, endpoint, spec["model"], dict(spec.get("params", {})),
                   price=Price(**prices.get(spec["model"], {})), mode=spec.get("mode", "online"),
                   budget_usd=budget,
                   ledger_dir=llm.get("ledger_dir") or str(Path(cache_dir) / "ledger"),
                   batch_discount=llm.get("batch_discount", 0.5), batch_poll_s=llm.get("batch_poll_s", 30.0),
                   offline=llm.get("offline", False), pin_fingerprint=llm.get("pin_fingerprint", False),
                   lease_s=llm.get("lease_s", 30.0))

    def where(self) -> str:
        """The role and where it sends: for every error message (never the API key)."""
        ep = self.endpoint
        return f"{self.name} via llm.endpoints.{ep.name} ({ep.base_url})"


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


def make_client(endpoint: Endpoint, max_retries: int | None = None, transport=None) -> openai.AsyncOpenAI:
    """An async OpenAI client of the endpoint. transport: a factory of the in-process transport that
    serves a `builtin://` endpoint (lionflow.oracle.transports()), required for one."""
    kwargs = dict(api_key=endpoint.api_key(), timeout=endpoint.timeout_s,
                  max_retries=endpoint.max_retries if max_retries is None else max_retries)
    if endpoint.builtin:
        if transport is None:
            raise RuntimeError(f"{endpoint.base_url} (llm.endpoints.{endpoint.name}) is served in-process: the "
                               "client needs its transport (lionflow.smk.llm_for passes it)")
        host = endpoint.base_url[len(BUILTIN_SCHEME):].strip("/") or "builtin"
        return openai.AsyncOpenAI(base_url=f"http://{host}.builtin/v1",
                                  http_client=openai.DefaultAsyncHttpxClient(transport=transport()), **kwargs)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, **kwargs)


def is_transient(e: BaseException) -> bool:
    """Worth retrying: 408/409/429/5xx, timeouts, connection errors, a garbled body."""
    if isinstance(e, openai.APIStatusError):
        return e.status_code in (408, 409, 429) or e.status_code >= 500
    return isinstance(e, (openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError))


def retry_after_s(e: BaseException) -> float | None:
    """The server's Retry-After (retry-after-ms or retry-after in seconds), if it sent one."""
    response = getattr(e, "response", None)
    if response is None:
        return None
    headers = response.headers
    try:
        if "retry-after-ms" in headers:
            return min(float(headers["retry-after-ms"]) / 1000, RETRY_AFTER_CAP_S)
        if "retry-after" in headers:
            return min(float(headers["retry-after"]), RETRY_AFTER_CAP_S)
    except ValueError:
        return None  # an HTTP date: fall back to our backoff
    return None


def describe_request(key: str, messages: list[dict], rid: str | None = None) -> str:
    text = next((m.get("content") for m in reversed(messages) if isinstance(m.get("content"), str)), "")
    snippet = " ".join(text.split())
    what = f"request {key[:12]}" + (f" for {rid}" if rid is not None else "")
    return f"{what} ({snippet[:60] + '...' if len(snippet) > 60 else snippet!s})"


class _Progress:
    """tqdm bar (rate and ETA) with tokens and cost; refreshed at most every 2 s."""

    def __init__(self, total: int, desc: str, stats: Stats):
        self.bar = tqdm(total=total, desc=desc, unit="req", mininterval=2.0, dynamic_ncols=False)
        self.stats = stats

    def update(self) -> None:
        s = self.stats
        self.bar.set_postfix_str(f"tok={s.prompt_tokens + s.completion_tokens} ${s.cost_usd:.4f} "
                                 f"cached={s.cache_hits} retries={s.retries} failed={s.failures}", refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


@dataclass
class LLM:
    """One role's client: `complete(requests)` answers a batch, cached and deduplicated run-wide."""

    role: Role
    cache: ResponseCache
    stats: Stats = field(default_factory=Stats)
    transport: object = None   # a factory of the in-process transport of a builtin:// endpoint (see make_client)

    def __post_init__(self):
        ep = self.role.endpoint
        self._presence: Presence | None = None
        share = None
        if not self.role.offline and (ep.rpm or ep.tpm):
            share = SharedShare(self.cache.dir, endpoint_key(ep.base_url, ep.name), self.presence)
        self.limiter = EndpointLimiter(ep.rpm, ep.tpm, share=share)
        self.ledger = None
        if self.role.ledger_dir and not self.role.offline:
            alive = lambda holder: self.presence.alive(holder_info(holder))
            self.ledger = Ledger(self.role.ledger_dir, self.role.budget_usd, alive=alive)
        self._completion_tokens_seen = collections.deque(maxlen=256)

    @property
    def presence(self) -> Presence:
        if self._presence is None or self._presence.closed:
            self._presence = Presence.of(self.cache.dir, self.role.lease_s)
        return self._presence

    def complete(self, requests: list[tuple[list[dict], dict]], desc: str = "",
                 ids: list[str] | None = None) -> list[Completion | LLMFailure]:
        """requests: (messages, extra params) pairs; extra params override the role's (e.g. seed).
        ids: what each request is for (an instruction id), named in errors.

        Raises BudgetExceeded (after the requests in flight are answered and cached) when the
        next request could pass `llm.budget_usd`, OfflineMiss (offline) when
        a request is not cached, TeacherChanged (pin_fingerprint) when the model answering changed.
        """
        if self.role.offline:
            results = self._complete_offline(requests, ids)
        elif self.role.mode == "batch":
            from .batch import complete_in_batch
            results = complete_in_batch(self, requests, desc or self.role.name, ids)
        else:
            results = asyncio.run(self._complete_all(requests, desc or self.role.name, ids))
        self._note_damage()
        self._check_served()
        return results

    def _note_damage(self) -> None:
        damaged = self.cache.damaged
        if len(damaged) > self.stats.cache_damaged:
            self.stats.cache_damaged = len(damaged)
            shown = "; ".join(f"{path}:{line}: {reason}" for path, line, reason in damaged[:3])
            self.stats.warnings.append(f"{len(damaged)} damaged record(s) in the LLM cache, their requests paid again "
                                       f"if asked: {shown}" + (" ..." if len(damaged) > 3 else ""))

    def _complete_offline(self, requests, ids) -> list[Completion]:
        """llm.offline: every answer from the cache; the first request not there fails at once."""
        started = time.monotonic()
        results = []
        for i, (messages, extra) in enumerate(requests):
            self.stats.requests += 1
            key = self._key(messages, self._params(extra))
            hit = self._from_cache(key)
            if hit is None:
                rid = ids[i] if ids else f"#{i} of this call"
                raise OfflineMiss(
                    f"llm.offline is true and the {self.role.name} request for instruction {rid} is not in the "
                    f"cache {self.cache.dir} (cache key {key}; {describe_request(key, messages)}). Nothing was "
                    "sent; set llm.offline: false to pay for the requests missing.")
            results.append(hit)
        self.stats.wall_s += time.monotonic() - started
        return results

    # ------------------------------------------------------------------ teacher drift
    def _identities(self) -> set:
        seen = set(self.stats.served)
        if self.ledger:
            self.ledger.spent(force=True)
            seen |= self.ledger.identities.get(self._ledger_model(), set())
        return seen

    def _ledger_model(self) -> str:
        return f"{self.role.endpoint.name}:{self.role.model}"

    def _drift_message(self, seen) -> str:
        listed = ", ".join(f"{m} (system_fingerprint {fp})" for m, fp in sorted(seen, key=lambda x: (x[0], x[1] or "")))
        return (f"{self.role.where()}: the model answering as {self.role.model} changed within the run: {listed}. "
                "Answers from different model versions are mixed in this run's artifacts"
                + ("" if self.role.pin_fingerprint else "; llm.pin_fingerprint: true makes this an error") + ".")

    def _check_served(self) -> None:
        seen = self._identities()
        if not changed(seen):
            return
        message = self._drift_message(seen)
        if self.role.pin_fingerprint:
            raise TeacherChanged(message)
        if message not in self.stats.warnings:
            log.warning("%s", message)
            self.stats.warnings.append(message)

    # ------------------------------------------------------------------ bookkeeping shared with batch mode
    def _params(self, extra: dict) -> dict:
        return {**self.role.params, **extra}

    def _key(self, messages, params) -> str:
        return request_key(self.role.endpoint.base_url, self.role.model, messages, params)

    def _hit(self, entry: dict) -> Completion:
        served = entry.get("served_model")
        if served is not None:
            self.stats.served[served, entry.get("system_fingerprint")] += 1
        return Completion(entry["content"], entry["finish_reason"], cached=True, model=served,
                          system_fingerprint=entry.get("system_fingerprint"))

    def _from_cache(self, key: str) -> Completion | None:
        hit = self.cache.get(key)
        if hit is None:
            return None
        self.stats.cache_hits += 1
        return self._hit(hit)

    def _book(self, usage: dict, discount: float = 1.0, served_model: str | None = None,
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

    def _store(self, key: str, content: str, finish_reason: str, usage: dict, served_model: str | None = None,
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

    def _redact(self, text: str) -> str:
        """Error text with the API key (should a server echo it) replaced by the variable's name."""
        env = self.role.endpoint.api_key_env
        key = os.environ.get(env) if env else None
        return text.replace(key, f"<${env}>") if key and len(key) >= 8 else text

    def _estimate(self, messages, params) -> tuple[int, int, int | None]:
        """(prompt tokens, expected completion tokens, max completion tokens) before sending."""
        max_tokens = params.get("max_completion_tokens") or params.get("max_tokens")
        seen = self._completion_tokens_seen
        expected = math.ceil(sum(seen) / len(seen)) if seen else 256
        return estimate_prompt_tokens(messages), min(expected, max_tokens or expected), max_tokens

    # ------------------------------------------------------------------ online mode
    async def _complete_all(self, requests, desc, ids):
        started = time.monotonic()
        ep = self.role.endpoint
        claims = Claims(self.cache, self.presence)
        client = None                                       # made at the first request we send
        send_slots = asyncio.Semaphore(ep.max_concurrency)
        window = asyncio.Semaphore(4 * ep.max_concurrency)  # our sends alive at once: memory does not grow
        results: list = [None] * len(requests)
        waiting: dict[str, list[int]] = {}                  # request key -> indices answered by its one call
        bodies: dict[str, tuple] = {}                       # request key -> (messages, params, id)
        gens: dict[str, int] = {}                           # request key -> generation of our claim on it
        deferred: dict[str, dict] = {}                      # request key -> the other job holding its claim
        stop: list[BudgetExceeded] = []
        crashed: list[BaseException] = []
        bar = _Progress(len(requests), desc, self.stats)
        tasks = []

        def resolve(key: str, result) -> None:
            bodies.pop(key, None)
            for i in waiting.pop(key):
                results[i] = result
                if result is not None:
                    bar.update()

        def finished(key: str, task: asyncio.Task) -> None:
            window.release()
            result = None if task.cancelled() else (task.exception() or task.result())
            if isinstance(result, BudgetExceeded):
                stop.append(result)
                result = None
            elif isinstance(result, BaseException):
                crashed.append(result)   # a bug or a cache that cannot be written, not a failed request: re-raised
                result = None
            gen = gens.pop(key, None)
            if gen is not None:
                try:
                    claims.release(key, gen, answered=key in self.cache)
                except OSError as e:     # an exception in a done-callback would be lost
                    crashed.append(e)
            resolve(key, result)

        async def start(key: str) -> None:
            """Claim the key and send it, or find its answer, or wait for the job that holds it."""
            nonlocal client
            await window.acquire()
            state, info = claims.claim(key)
            if state == "mine":
                if stop or crashed:
                    claims.release(key, info, answered=False)
                    window.release()
                    resolve(key, None)
                    return
                gens[key] = info
                if client is None:
                    try:
                        client = make_client(ep, max_retries=0, transport=self.transport)   # we retry: every attempt passes the limiter
                    except RuntimeError as e:
                        crashed.append(RuntimeError(f"{self.role.where()}: {e}"))
                        claims.release(key, gens.pop(key), answered=False)
                        window.release()
                        resolve(key, None)
                        return
                messages, params, rid = bodies[key]
                task = asyncio.ensure_future(self._send(client, send_slots, key, messages, params, rid))
                task.add_done_callback(lambda t, key=key: finished(key, t))
                tasks.append(task)
                return
            window.release()
            if state == "cached":
                self.stats.cache_hits += 1
                self.stats.shared += 1
                resolve(key, self._hit(self.cache.get(key)))
            else:
                deferred[key] = info

        async def wait_for_others() -> None:
            """Read the answers of the jobs holding our deferred keys; take over from a dead or released one."""
            while deferred:
                if not any(not t.done() for t in tasks):
                    self.limiter.close()      # only waiting: our share of the endpoint's limits goes to the others
                await asyncio.sleep(POLL_S)
                self.cache.refresh(also={info["part"] for info in deferred.values()}, listing=False)
                released = set(self.cache.take_released())
                now, alive = time.monotonic(), {}
                for key, info in list(deferred.items()):
                    entry = self.cache.get(key)
                    if entry is not None:
                        del deferred[key]
                        self.stats.cache_hits += 1
                        self.stats.shared += 1
                        resolve(key, self._hit(entry))
                        continue
                    holder = info["holder"]
                    if holder not in alive:
                        alive[holder] = self.presence.alive(info, now)
                    if key in released or not alive[holder]:
                        del deferred[key]
                        if stop or crashed:
                            resolve(key, None)
                        else:
                            await start(key)

        try:
            for i, (messages, extra) in enumerate(requests):
                self.stats.requests += 1
                params = self._params(extra)
                key = self._key(messages, params)
                if key in waiting:  # identical requests at once are sent (or waited for) once
                    waiting[key].append(i)
                    continue
                hit = self._from_cache(key)
                if hit is not None:
                    results[i] = hit
                    bar.update()
                    continue
                if stop or crashed:
                    continue
                waiting[key] = [i]
                bodies[key] = (messages, params, ids[i] if ids else None)
                await start(key)
            await wait_for_others()
            while tasks:   # sends started by wait_for_others included
                pending, tasks[:] = list(tasks), []
                await asyncio.gather(*pending, return_exceptions=True)
                await wait_for_others()
        finally:
            for key in list(gens):   # interrupted: what we hold goes back to the other jobs
                claims.release(key, gens.pop(key), answered=key in self.cache)
            bar.close()
            if client is not None:
                await client.close()
            self.limiter.close()
            self.cache.close()
            if self.ledger:
                self.ledger.close()
            self.stats.wall_s += time.monotonic() - started
        if crashed:
            raise crashed[0]
        if stop:
            unsent = sum(r is None for r in results)
            raise BudgetExceeded(f"{stop[0]} ({self.role.name}: {unsent} of {len(requests)} requests not sent)")
        return results

    async def _send(self, client, send_slots, key, messages, params, rid=None) -> Completion | LLMFailure:
        prompt_est, completion_est, max_tokens = self._estimate(messages, params)
        worst_usd = self.role.price.cost(prompt_est, max_tokens or completion_est)
        if self.ledger:
            self.ledger.reserve(worst_usd, self.role.name)   # raises BudgetExceeded before anything is sent

        def wait(state) -> float:
            e = state.outcome.exception()
            after = retry_after_s(e)
            if after is None:
                return _backoff(state)
            if isinstance(e, openai.RateLimitError):
                self.limiter.pause(after)       # the whole endpoint backs off, not just this request
            return after + _backoff(state)     # + full jitter growing per attempt: no thundering herd

        def count(state) -> None:
            self.stats.retries += 1

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.role.endpoint.max_retries + 1),
                                               wait=wait, retry=retry_if_exception(is_transient),
                                               before_sleep=count, reraise=True):
                with attempt:
                    async with send_slots:
                        estimate = prompt_est + self._estimate(messages, params)[1]  # learns as answers arrive
                        await self.limiter.acquire(estimate)
                        try:
                            r = await client.chat.completions.create(model=self.role.model, messages=messages,
                                                                     **params)
                        except Exception as e:
                            self.limiter.settle_tokens(estimate, 0 if isinstance(e, openai.RateLimitError)
                                                       else estimate)  # unknown: assume it counted
                            self.stats.rate_limited += isinstance(e, openai.RateLimitError)
                            raise
        except Exception as e:
            if not isinstance(e, (openai.OpenAIError, json.JSONDecodeError)):
                raise
            self.stats.failures += 1
            status = getattr(e, "status_code", None)
            kind = f"{type(e).__name__}{f' (HTTP {status})' if status else ''}"
            error = self._redact(f"{self.role.where()}: {kind} after {attempt.retry_state.attempt_number} attempt(s) "
                                 f"on {describe_request(key, messages, rid)}: {e}")
            if not is_transient(e):
                log.error("not retried: %s", error)
            return LLMFailure(error, kind)
        finally:
            if self.ledger:
                self.ledger.release(worst_usd)
        choice = r.choices[0]
        usage = {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens} \
            if r.usage else {}
        self.limiter.settle_tokens(estimate, usage.get("prompt_tokens", prompt_est) + usage.get("completion_tokens", 0))
        served, fingerprint = r.model or self.role.model, getattr(r, "system_fingerprint", None)
        self._book(usage, served_model=served, system_fingerprint=fingerprint)
        if choice.message.content is None:
            self.stats.failures += 1
            return LLMFailure(f"{self.role.where()}: empty message (finish_reason={choice.finish_reason}) on "
                              f"{describe_request(key, messages, rid)}", "empty message")
        return self._store(key, choice.message.content, choice.finish_reason, usage, served, fingerprint)
