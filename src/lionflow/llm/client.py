"""Async access to OpenAI-compatible endpoints for the teacher, referee and generator roles.

Every call goes through the real `openai` client. `builtin://oracle` endpoints reach the
embedded oracle in-process through an ASGI transport (no network, no key). Answers are looked
up in and written to the persistent ResponseCache as they arrive; identical requests in one
batch are sent once; concurrency is bounded per endpoint; transient errors (408/409/429/5xx,
timeouts, connection errors) are retried by the SDK with exponential backoff. A request that
still fails becomes an `LLMFailure` value: callers decide, and nothing placeholder-like is ever
returned as text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from dataclasses import dataclass, field

import openai
from tqdm import tqdm

from .cache import ResponseCache, request_key

log = logging.getLogger(__name__)

BUILTIN_ORACLE = "builtin://oracle"


@dataclass(frozen=True)
class Endpoint:
    name: str
    base_url: str
    api_key_env: str | None = None
    max_concurrency: int = 16
    timeout_s: float = 120.0
    max_retries: int = 5

    def api_key(self) -> str:
        if self.base_url == BUILTIN_ORACLE or not self.api_key_env:
            return "unused"  # the oracle and local servers need no key
        key = os.environ.get(self.api_key_env)
        if not key:
            raise RuntimeError(
                f"environment variable {self.api_key_env} is not set "
                f"(llm.endpoints.{self.name}.api_key_env); export the API key there"
            )
        return key


@dataclass(frozen=True)
class Role:
    name: str
    endpoint: Endpoint
    model: str
    params: dict  # sampling parameters sent with every request (temperature, max_tokens, ...)

    @classmethod
    def from_config(cls, config: dict, role: str) -> "Role":
        llm = config["llm"]
        spec = llm[role]
        ep = llm["endpoints"][spec["endpoint"]]
        endpoint = Endpoint(
            name=spec["endpoint"], base_url=ep["base_url"], api_key_env=ep.get("api_key_env"),
            max_concurrency=ep.get("max_concurrency", 16), timeout_s=ep.get("timeout_s", 120.0),
            max_retries=ep.get("max_retries", 5),
        )
        return cls(role, endpoint, spec["model"], dict(spec.get("params", {})))


@dataclass(frozen=True)
class Completion:
    content: str
    finish_reason: str
    cached: bool


@dataclass(frozen=True)
class LLMFailure:
    error: str


@dataclass
class Stats:
    requests: int = 0
    cache_hits: int = 0
    paid: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def as_dict(self, role: Role) -> dict:
        return {"role": role.name, "model": role.model, **self.__dict__}


def make_client(endpoint: Endpoint) -> openai.AsyncOpenAI:
    kwargs = dict(api_key=endpoint.api_key(), timeout=endpoint.timeout_s, max_retries=endpoint.max_retries)
    if endpoint.base_url == BUILTIN_ORACLE:
        import httpx2

        from lionflow.oracle.app import create_app

        transport = httpx2.ASGITransport(app=create_app())
        return openai.AsyncOpenAI(base_url="http://oracle.builtin/v1",
                                  http_client=openai.DefaultAsyncHttpxClient(transport=transport), **kwargs)
    return openai.AsyncOpenAI(base_url=endpoint.base_url, **kwargs)


@dataclass
class LLM:
    """One role's client: `complete(requests)` answers a batch, cached and deduplicated."""

    role: Role
    cache: ResponseCache
    stats: Stats = field(default_factory=Stats)

    def complete(self, requests: list[tuple[list[dict], dict]], desc: str = "") -> list[Completion | LLMFailure]:
        """requests: (messages, extra params) pairs; extra params override the role's (e.g. seed)."""
        return asyncio.run(self._complete_all(requests, desc or self.role.name))

    async def _complete_all(self, requests, desc):
        started = time.monotonic()
        client = make_client(self.role.endpoint)
        limit = asyncio.Semaphore(self.role.endpoint.max_concurrency)
        in_flight: dict[str, asyncio.Task] = {}
        bar = tqdm(total=len(requests), desc=desc, unit="req", mininterval=2.0, dynamic_ncols=False)

        async def one(messages, params, key):
            async with limit:
                try:
                    r = await client.chat.completions.create(model=self.role.model, messages=messages, **params)
                except openai.OpenAIError as e:
                    self.stats.failures += 1
                    return LLMFailure(f"{type(e).__name__}: {e}")
            self.stats.paid += 1
            choice = r.choices[0]
            content = choice.message.content
            if content is None:
                self.stats.failures += 1
                return LLMFailure(f"empty message (finish_reason={choice.finish_reason})")
            usage = {"prompt_tokens": r.usage.prompt_tokens, "completion_tokens": r.usage.completion_tokens} if r.usage else {}
            self.stats.prompt_tokens += usage.get("prompt_tokens", 0)
            self.stats.completion_tokens += usage.get("completion_tokens", 0)
            self.cache.put(key, {"model": self.role.model, "content": content,
                                 "finish_reason": choice.finish_reason, "usage": usage})
            return Completion(content, choice.finish_reason, cached=False)

        async def answer(messages, extra):
            params = {**self.role.params, **extra}
            key = request_key(self.role.endpoint.base_url, self.role.model, messages, params)
            self.stats.requests += 1
            hit = self.cache.get(key)
            if hit is not None:
                self.stats.cache_hits += 1
                result = Completion(hit["content"], hit["finish_reason"], cached=True)
            else:
                if key not in in_flight:  # identical requests in flight at once are sent once
                    in_flight[key] = asyncio.ensure_future(one(messages, params, key))
                result = await in_flight[key]
            bar.update(1)
            return result

        try:
            return await asyncio.gather(*(answer(m, p) for m, p in requests))
        finally:
            bar.close()
            await client.close()
            self.cache.close()
            self.stats.wall_s += time.monotonic() - started
