import os
import sys
from pathlib import Path

import pytest

# Tests never reach a hub: everything is built locally or shipped under resources/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "resources" / "prompts"
# The settings the rules pass to training and generation, from the schema's defaults (their one home):
# benchmarks/workflow_config.py, shared with the benchmarks.
sys.path.insert(0, str(ROOT / "benchmarks"))
from workflow_config import generate_config, load_config, schema_defaults, train_settings  # noqa: E402, F401

ENDPOINT_KEYS = ("api_key_env", "max_concurrency", "timeout_s", "max_retries", "rpm", "tpm")


def llm_config(base_url, *, endpoint="test", model="oracle-1", params=None, mode="online", price=None,
               cache_dir=".cache/llm", **settings) -> dict:
    """The `llm` section of config/config.yaml replaced and validated against config/schema.yaml, so that
    every default is the schema's: one endpoint `endpoint` at `base_url` serving every role with `model`.
    settings: that endpoint's keys (max_concurrency, rpm, ...) and run-wide `llm` keys (budget_usd,
    ledger_dir, lease_s, ...); price: (input, output) USD per million tokens of the model."""
    from snakemake.utils import validate

    config = load_config()
    ep = {"base_url": base_url, **{k: settings.pop(k) for k in ENDPOINT_KEYS if k in settings}}
    role = {"endpoint": endpoint, "model": model, "params": dict(params or {}), "mode": mode}
    llm = {"cache_dir": str(cache_dir), "endpoints": {endpoint: ep}, "generator": dict(role),
           "teacher": {**role, "prompt": str(PROMPTS / "teacher.yaml")},
           "referee": {**role, "prompt": str(PROMPTS / "referee.yaml")}, **settings}
    if price is not None:
        llm["prices"] = {model: {"input_per_mtok": price[0], "output_per_mtok": price[1]}}
    config["llm"] = llm
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return config["llm"]


def make_role(base_url, role="teacher", **kw):
    """A Role built as the run builds it (Role.from_config) from llm_config(base_url, **kw); a role the
    schema's `llm` has no key for (judge, reference) is the teacher's under that name."""
    from lionflow.llm import Role

    llm = llm_config(base_url, **kw)
    return Role.from_config({"llm": {role: llm["teacher"], **llm}}, role)


def make_llm(base_url, cache_dir, role="teacher", **kw):
    """The client of a role as the run builds it (lionflow.smk.llm_for), its cache in cache_dir."""
    from lionflow.smk import llm_for

    llm = llm_config(base_url, cache_dir=cache_dir, **kw)
    llm["ledger_dir"] = llm["ledger_dir"] or str(Path(cache_dir) / "ledger")   # the run's own, kept with the cache
    return llm_for({"llm": {role: llm["teacher"], **llm}}, role)


@pytest.fixture
def oracle_llm(tmp_path):
    """Factory: an LLM client for a role, talking to the in-process oracle, with a fresh cache."""

    def make(role="teacher", params=None, cache_dir=None):
        return make_llm("builtin://oracle", cache_dir or tmp_path / "cache", role, endpoint="oracle", params=params,
                        max_concurrency=8)

    return make


class ScriptedGenerator:
    """A stand-in generator LLM that proposes the given instructions in turn."""

    def __init__(self, *texts):
        self.texts = list(texts)

    def complete(self, requests, desc="", ids=None):
        from lionflow.llm import Completion

        return [Completion(self.texts.pop(0), "stop", False) for _ in requests]

