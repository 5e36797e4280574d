"""What a role is, built from the validated `llm` config: its endpoint and its run-wide settings.

Every default lives in config/schema.yaml: these classes take the config as validated against it
(defaults filled in) and keep no second copy of a default; a key missing here is an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from .ledger import Price

BUILTIN_SCHEME = "builtin://"   # an endpoint served in-process, through a transport given to the client


@dataclass(frozen=True)
class Endpoint:
    """One entry of llm.endpoints (see config/schema.yaml for each field)."""

    name: str
    base_url: str
    api_key_env: str | None
    max_concurrency: int
    timeout_s: float
    max_retries: int
    rpm: float | None        # requests per minute allowed by the provider (None: no client-side limit)
    tpm: float | None        # tokens per minute allowed by the provider

    @classmethod
    def from_config(cls, llm: dict, name: str) -> Endpoint:
        ep = llm["endpoints"][name]
        return cls(name=name, base_url=ep["base_url"], api_key_env=ep["api_key_env"],
                   max_concurrency=ep["max_concurrency"], timeout_s=ep["timeout_s"], max_retries=ep["max_retries"],
                   rpm=ep["rpm"], tpm=ep["tpm"])

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
    """One LLM role (teacher, referee, generator, judge, reference) with the run-wide `llm` settings."""

    name: str
    endpoint: Endpoint
    model: str
    params: dict            # sampling parameters sent with every request (temperature, max_tokens, ...)
    price: Price            # USD per million tokens (0: a model llm.prices does not list)
    mode: str               # online | batch (the OpenAI Batch API)
    budget_usd: float | None
    ledger_dir: str | None  # where spending is recorded (None: nowhere; a run's rules always set it)
    batch_discount: float   # batch price / online price
    batch_poll_s: float     # how often a submitted batch is polled
    offline: bool           # serve only from the cache, send nothing
    pin_fingerprint: bool   # a changed model / system_fingerprint within the run is an error
    lease_s: float          # a claim whose holder shows no heartbeat for this long is taken over
    breaker_first_n: int    # the first N attempts all failing the same way stop the call (0: never)
    no_progress_s: float | None   # no answer for this long while sending stops the call (None: never)

    @classmethod
    def from_config(cls, config: dict, role: str) -> Role:
        """The role `llm.<role>` of a config validated against config/schema.yaml (every key present)."""
        llm = config["llm"]
        spec = llm[role]
        prices, budget, model = llm["prices"], llm["budget_usd"], spec["model"]
        if budget is not None and model not in prices:
            raise ValueError(f"config: llm.budget_usd is set but llm.prices has no entry for model "
                             f"{model!r} (llm.{role}.model): the cost could not be estimated")
        if budget is not None and llm["ledger_dir"] is None and not llm["offline"]:
            raise ValueError("config: llm.budget_usd is set but llm.ledger_dir is null: no ledger to hold the "
                             "budget (a run's rules set it to results/<run>/ledger)")
        price = Price(**prices[model]) if model in prices else Price(0.0, 0.0)
        return cls(role, Endpoint.from_config(llm, spec["endpoint"]), model, dict(spec["params"]), price=price,
                   mode=spec["mode"], budget_usd=budget, ledger_dir=llm["ledger_dir"],
                   batch_discount=llm["batch_discount"], batch_poll_s=llm["batch_poll_s"], offline=llm["offline"],
                   pin_fingerprint=llm["pin_fingerprint"], lease_s=llm["lease_s"],
                   breaker_first_n=llm["circuit_breaker"]["first_n"],
                   no_progress_s=llm["circuit_breaker"]["no_progress_s"])

    def where(self) -> str:
        """The role and where it sends: for every error message (never the API key)."""
        ep = self.endpoint
        return f"{self.name} via llm.endpoints.{ep.name} ({ep.base_url})"
