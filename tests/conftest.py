import os
from pathlib import Path

import pytest

# Tests never reach a hub: everything is built locally or shipped under resources/.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = ROOT / "resources" / "prompts"


@pytest.fixture
def oracle_llm(tmp_path):
    """Factory: an LLM client for a role, talking to the in-process oracle, with a fresh cache."""
    from lionflow.llm import LLM, Endpoint, ResponseCache, Role
    from lionflow.oracle import URL, transports

    def make(role="teacher", params=None, cache_dir=None):
        endpoint = Endpoint(name="oracle", base_url=URL, max_concurrency=8)
        return LLM(Role(role, endpoint, "oracle-1", dict(params or {})), ResponseCache(cache_dir or tmp_path / "cache"),
                   transport=transports()[URL])

    return make


class ScriptedGenerator:
    """A stand-in generator LLM that proposes the given instructions in turn."""

    def __init__(self, *texts):
        self.texts = list(texts)

    def complete(self, requests, desc="", ids=None):
        from lionflow.llm import Completion

        return [Completion(self.texts.pop(0), "stop", False) for _ in requests]
