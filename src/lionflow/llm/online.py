"""Online mode: requests sent as they come, at the endpoint's limits (one of the two ways to send).

Every call goes through the real `openai` client. A `builtin://` endpoint (the embedded oracle)
is reached in-process through the transport given by whoever builds the client from config
(lionflow.smk.llm_for; no network, no key): this package knows no server of its own. For each request,
in order: the request pipeline (lionflow.llm.pipeline: the persistent ResponseCache, a hit costs
nothing; identical requests in flight at once are sent once; a claim on the request's cache key,
so that an identical request is sent once for the whole run, whatever other jobs ask at the same
time: a job that finds a key claimed waits for the other job's answer and reads it from the
cache); at most `max_concurrency` in flight per endpoint; the endpoint's RPM/TPM token buckets, shared
with the other jobs sending to it; the budget (`Ledger`, for the run); the call, retried by tenacity on transient errors
(408/409/429/5xx, timeouts, connection errors, replies that are not a chat completion: a body that
is not JSON, an HTML page, JSON without `choices`) with exponential backoff and full jitter, or
after the server's Retry-After (which also pauses the endpoint); the circuit breaker
(lionflow.llm.breaker) stops the call when its first attempts all fail the same way. The SDK's own
retries are off so that every attempt passes the rate limiter and is counted. Answers are
written to the cache the moment they arrive. A request that still fails becomes an
`LLMFailure` value naming the role, the endpoint and the request: the stage decides
(`lionflow.failures`), and nothing placeholder-like is ever returned as text.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time

import openai
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_random_exponential
from tqdm import tqdm

from .bookkeeping import Books, Completion, LLMFailure, Stats, describe_request
from .breaker import Breaker
from .config import BUILTIN_SCHEME, Endpoint
from .ledger import BudgetExceeded
from .limiter import EndpointLimiter
from .pipeline import Dispatch, Request
from .rate_share import RateShare, endpoint_key

log = logging.getLogger(__name__)

RETRY_AFTER_CAP_S = 120.0   # as the SDK: a longer Retry-After is not waited for in full
_backoff = wait_random_exponential(multiplier=0.5, max=8)  # 0.5 s x 2^n, capped at 8 s, full jitter


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


class UnreadableReply(Exception):
    """An HTTP 200 whose body is not a chat completion (not JSON, an HTML page, JSON without choices)."""

    def __init__(self, what: str, body: str):
        self.what, self.body = what, body
        super().__init__(f"the reply is {what}; the body starts {' '.join(body.split())[:200]!r}")


def read_reply(r):
    """The chat completion the SDK parsed, or UnreadableReply naming what came instead."""
    if isinstance(r, str | bytes):   # the SDK returns the text of a body that is not application/json
        text = r.decode(errors="replace") if isinstance(r, bytes) else r
        html = text.lstrip()[:15].lower().startswith(("<!doctype html", "<html"))
        raise UnreadableReply("an HTML page" if html else "not JSON", text)
    if not getattr(r, "choices", None) or getattr(r.choices[0], "message", None) is None:
        raise UnreadableReply("JSON without choices", json.dumps(r.to_dict()) if hasattr(r, "to_dict")
                              else str(r))
    return r


def is_transient(e: BaseException) -> bool:
    """Worth retrying: 408/409/429/5xx, timeouts, connection errors, a garbled or unreadable body."""
    if isinstance(e, openai.APIStatusError):
        return e.status_code in (408, 409, 429) or e.status_code >= 500
    return isinstance(e, (openai.APIConnectionError, openai.APIResponseValidationError, json.JSONDecodeError,
                          UnreadableReply))


def failure_kind(e: BaseException) -> str:
    """The kind of a failed attempt, as stats, failure summaries and the circuit breaker name it."""
    if isinstance(e, UnreadableReply):
        return f"unreadable reply ({e.what.removeprefix('an ')})"
    status = getattr(e, "status_code", None)
    return f"{type(e).__name__}{f' (HTTP {status})' if status else ''}"


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


class OnlineSender:
    """Sends a role's requests online: limits, retries, budget; answers cached as they arrive."""

    def __init__(self, books: Books, transport=None):
        self.books, self.transport = books, transport
        ep = books.role.endpoint
        share = None
        if ep.rpm or ep.tpm:
            share = RateShare(books.cache.dir, endpoint_key(ep.base_url, ep.name), books.presence)
        self.limiter = EndpointLimiter(ep.rpm, ep.tpm, share=share)

    def complete(self, requests, desc: str, ids=None, check=None) -> list[Completion | LLMFailure]:
        return asyncio.run(self._call(requests, desc, ids, check))

    async def _call(self, requests, desc, ids, check):
        return await _OnlineCall(self, requests, desc, ids, check).run()   # (made in the loop it runs in)


class _OnlineCall:
    """One call online: each key the dispatcher (lionflow.llm.pipeline) leaves to us sent as it comes,
    at most 4 x max_concurrency of ours alive at once; everything given up together when the call
    stops (the budget, a crash, the circuit breaker)."""

    def __init__(self, sender: OnlineSender, requests, desc: str, ids, check):
        self.sender, self.check = sender, check
        self.books, self.limiter = sender.books, sender.limiter
        self.role, self.stats, self.ledger = self.books.role, self.books.stats, self.books.ledger
        ep = self.role.endpoint
        self.breaker = Breaker(self.role.where(), self.role.breaker_first_n, self.role.no_progress_s)
        self.bar = _Progress(len(requests), desc, self.stats)
        self.dispatch = Dispatch(self.books, requests, ids, answered=self.bar.update)
        self.client = None                                       # made at the first request we send
        self.send_slots = asyncio.Semaphore(ep.max_concurrency)
        self.window = asyncio.Semaphore(4 * ep.max_concurrency)  # our sends alive at once: memory does not grow
        self.live: set[asyncio.Task] = set()                     # our sends not finished yet
        self.tasks: list[asyncio.Task] = []                      # our sends not gathered yet
        self.stop: list[BudgetExceeded] = []
        self.crashed: list[BaseException] = []

    async def run(self) -> list[Completion | LLMFailure | None]:
        started = time.monotonic()
        guard = asyncio.ensure_future(self._watchdog()) if self.role.no_progress_s else None
        try:
            await self._send_all()
        finally:
            if guard is not None:
                guard.cancel()
            await self._close()
            self.stats.wall_s += time.monotonic() - started
        return self._outcome()

    async def _send_all(self) -> None:
        """Every key left to us claimed and sent (or left to the job holding it); then every send
        finished, and every key another job held answered or taken over."""
        for key in self.dispatch.misses():
            if self.halt():
                self.dispatch.resolve(key, None)
            else:
                await self._start(key)
        await self._wait_for_others()
        while self.tasks:   # sends started by _wait_for_others included
            pending, self.tasks[:] = list(self.tasks), []
            await asyncio.gather(*pending, return_exceptions=True)
            await self._wait_for_others()

    async def _start(self, key: str) -> None:
        """Claim the key and send it, or find its answer, or leave it to the job that holds it."""
        await self.window.acquire()
        if self.dispatch.claim(key) != "mine":
            self.window.release()
            return
        if self.halt() or self._client() is None:
            self.dispatch.release(key, answered=False)
            self.window.release()
            self.dispatch.resolve(key, None)
            return
        if not self.live:
            self.breaker.last_progress = time.monotonic()
        task = asyncio.ensure_future(self._send(key, self.dispatch.bodies[key]))
        self.live.add(task)
        task.add_done_callback(lambda t, key=key: self._finished(key, t))
        self.tasks.append(task)

    def _client(self):
        """The call's client, made at the first request we send (None: it cannot be; the call crashed)."""
        if self.client is None:
            try:   # we retry: every attempt passes the limiter
                self.client = make_client(self.role.endpoint, max_retries=0, transport=self.sender.transport)
            except RuntimeError as e:
                self.crashed.append(RuntimeError(f"{self.role.where()}: {e}"))
        return self.client

    def _finished(self, key: str, task: asyncio.Task) -> None:
        """A send's done-callback: its outcome kept, its claim released, its requests answered."""
        self.live.discard(task)
        self.window.release()
        result = None if task.cancelled() else (task.exception() or task.result())
        if isinstance(result, BudgetExceeded):
            self.stop.append(result)
            result = None
        elif isinstance(result, BaseException):
            if result not in self.crashed:   # a bug or a cache that cannot be written, not a failed request: re-raised
                self.crashed.append(result)
            result = None
        try:
            self.dispatch.release(key)
        except OSError as e:     # an exception in a done-callback would be lost
            self.crashed.append(e)
        self.dispatch.resolve(key, result)

    async def _wait_for_others(self) -> None:
        """Read the answers of the jobs holding our keys; take over from a dead or released one."""
        async for key in self.dispatch.freed(idle=self._idle):
            if self.halt():
                self.dispatch.resolve(key, None)
            else:
                await self._start(key)

    def _idle(self) -> None:
        if not any(not t.done() for t in self.tasks):
            self.limiter.close()      # only waiting: our share of the endpoint's limits goes to the others

    def halt(self, e: BaseException | None = None) -> bool:
        """Whether the call is stopping (nothing more is sent); e: a crash, recorded at once, so that no send
        queued behind it goes out before its task's done-callback runs."""
        if e is not None and e not in self.crashed:
            self.crashed.append(e)
        return bool(self.stop or self.crashed or self.breaker.tripped)

    def _open_circuit(self) -> None:
        """The breaker opened: nothing more is sent, what is in flight is given up."""
        for t in list(self.live):
            if t is not asyncio.current_task():
                t.cancel()

    async def _watchdog(self) -> None:
        breaker = self.breaker
        while not breaker.tripped:
            await asyncio.sleep(min(1.0, self.role.no_progress_s / 4))
            if not self.live:
                breaker.last_progress = time.monotonic()   # nothing of ours in flight: not stalled
            elif breaker.stalled():
                self._open_circuit()

    async def _close(self) -> None:
        self.dispatch.release_all()     # interrupted: what we hold goes back to the other jobs
        self.bar.close()
        if self.client is not None:
            await self.client.close()
        self.limiter.close()
        self.books.close()

    def _outcome(self) -> list[Completion | LLMFailure | None]:
        """The answers in order, or the reason the call stopped."""
        results, n = self.dispatch.results, len(self.dispatch.results)
        if self.crashed:
            raise self.crashed[0]
        if self.breaker.tripped:
            unsent = sum(r is None for r in results)
            raise type(self.breaker.tripped)(f"{self.breaker.tripped} ({unsent} of {n} requests not answered)")
        if self.stop:
            unsent = sum(r is None for r in results)
            raise BudgetExceeded(f"{self.stop[0]} ({self.role.name}: {unsent} of {n} requests not sent)")
        return results

    async def _send(self, key: str, request: Request) -> Completion | LLMFailure | None:
        messages, params, rid = request.messages, request.params, request.rid
        books, breaker, limiter = self.books, self.breaker, self.limiter
        prompt_est, completion_est, max_tokens = books.estimate(messages, params)
        worst_usd = self.role.price.cost(prompt_est, max_tokens or completion_est)
        if self.ledger:
            self.ledger.reserve(worst_usd, self.role.name)   # raises BudgetExceeded before anything is sent

        def wait(state) -> float:
            e = state.outcome.exception()
            after = retry_after_s(e)
            if after is None:
                return _backoff(state)
            if isinstance(e, openai.RateLimitError):
                limiter.pause(after)       # the whole endpoint backs off, not just this request
            return after + _backoff(state)     # + full jitter growing per attempt: no thundering herd

        def count(state) -> None:
            self.stats.retries += 1

        try:
            async for attempt in AsyncRetrying(stop=stop_after_attempt(self.role.endpoint.max_retries + 1),
                                               wait=wait, retry=retry_if_exception(
                                                   lambda e: is_transient(e) and not breaker.tripped),
                                               before_sleep=count, reraise=True):
                with attempt:
                    async with self.send_slots:
                        estimate = prompt_est + books.estimate(messages, params)[1]  # learns as answers arrive
                        await limiter.acquire(estimate)
                        if self.halt():
                            limiter.settle_tokens(estimate, 0)
                            return None      # the call is stopping: not sent (a rerun sends it)
                        try:
                            try:
                                r = read_reply(await self.client.chat.completions.create(
                                    model=self.role.model, messages=messages, **params))
                            except json.JSONDecodeError as e:    # its .doc is the body
                                raise UnreadableReply("not JSON", e.doc) from e
                        except Exception as e:
                            limiter.settle_tokens(estimate, 0 if isinstance(e, openai.RateLimitError)
                                                  else estimate)  # unknown: assume it counted
                            self.stats.rate_limited += isinstance(e, openai.RateLimitError)
                            if (not isinstance(e, openai.RateLimitError)
                                    and isinstance(e, (openai.OpenAIError, UnreadableReply))
                                    and breaker.failed(failure_kind(e), books.redact(
                                        e.body if isinstance(e, UnreadableReply) else str(e)))):
                                self._open_circuit()
                            raise
        except Exception as e:
            if not isinstance(e, (openai.OpenAIError, UnreadableReply)):
                raise
            self.stats.failures += 1
            kind = failure_kind(e)
            error = books.redact(f"{self.role.where()}: {kind} after {attempt.retry_state.attempt_number} attempt(s) "
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
        limiter.settle_tokens(estimate, usage.get("prompt_tokens", prompt_est) + usage.get("completion_tokens", 0))
        served, fingerprint = r.model or self.role.model, getattr(r, "system_fingerprint", None)
        books.book(usage, served_model=served, system_fingerprint=fingerprint)
        if choice.message.content is None:
            self.stats.failures += 1
            if breaker.failed("empty message", f"finish_reason={choice.finish_reason}"):
                self._open_circuit()
            return LLMFailure(f"{self.role.where()}: empty message (finish_reason={choice.finish_reason}) on "
                              f"{describe_request(key, messages, rid)}", "empty message")
        try:
            completion = books.store(key, choice.message.content, choice.finish_reason, usage, served, fingerprint)
        except Exception as e:
            self.halt(e)
            raise
        problem = self.check(completion) if self.check else None
        if problem is None:
            breaker.answered()
        elif breaker.failed(problem, completion.content or f"(no text; finish_reason={completion.finish_reason})"):
            self._open_circuit()
        return completion
