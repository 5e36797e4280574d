"""Batch mode against the test server's Batch API: submit, crash, resume one batch."""
from __future__ import annotations

import dataclasses

import pytest

from lionflow.llm import LLM, Completion, Price, ResponseCache
from lionflow.llm import batch as batch_mode
from lionflow.oracle.datasets import sample_pool
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS, make_llm
from testserver import ServerConfig, TestServer

TEACHER = PromptTemplate.load(PROMPTS / "teacher.yaml")


def _batch_llm(server, tmp_path):
    return make_llm(server.url, tmp_path / "cache", params={"max_tokens": 64}, mode="batch", batch_poll_s=0.05,
                    price=(2.0, 8.0), ledger_dir=str(tmp_path / "ledger"), timeout_s=5, max_retries=2)


def test_batch_submit_crash_resume(tmp_path, monkeypatch):
    pool = sample_pool(12, seed=0)
    requests = [(TEACHER.messages(instruction=p.instruction, input=p.input), {}) for p in pool]
    requests.append(requests[0])                                   # a duplicate goes in the batch once
    with TestServer(ServerConfig(batch_delay_s=0.3)) as server:
        class Crash(BaseException):
            pass

        def crash(_seconds):
            raise Crash()                                          # the process dies while polling

        monkeypatch.setattr(batch_mode.time, "sleep", crash)
        with pytest.raises(Crash):
            _batch_llm(server, tmp_path).complete(requests)
        assert len(list((tmp_path / "cache" / "batches").glob("*.json"))) == 1   # the batch id is on disk
        monkeypatch.undo()

        llm = _batch_llm(server, tmp_path)                          # a fresh process: resumes the same batch
        replies = llm.complete(requests)
        log = server.log()
    assert sum(e["outcome"] == "batch_created" for e in log) == 1  # one batch submitted, never a second
    assert sum(e["outcome"] == "batch_ok" for e in log) == len(pool)
    assert all(isinstance(r, Completion) for r in replies)
    assert [r.content for r in replies] == [p.answer for p in pool] + [pool[0].answer]
    assert llm.stats.paid == len(pool) and len(ResponseCache(tmp_path / "cache")) == len(pool)
    full_price = Price(2.0, 8.0).cost(llm.stats.prompt_tokens, llm.stats.completion_tokens)
    assert llm.stats.cost_usd == pytest.approx(full_price / 2)     # half price
    assert not list((tmp_path / "cache" / "batches").glob("*.json"))   # done: nothing left to resume
    # Answers are in the same cache as online ones: online mode now pays nothing.
    online = LLM(dataclasses.replace(llm.role, mode="online"), ResponseCache(tmp_path / "cache"))
    assert all(r.cached for r in online.complete(requests))


def test_batch_mode_refuses_the_in_process_oracle(tmp_path):
    llm = make_llm("builtin://oracle", tmp_path, endpoint="o", mode="batch")
    with pytest.raises(ValueError, match="mode: batch needs an endpoint with the Batch API"):
        llm.complete([([{"role": "user", "content": "x"}], {})])


def test_server_only_parameters_travel_in_the_batch_request_body(tmp_path):
    """params.extra_body (vLLM's top_k, min_p, ...) is merged into each batch line's body, as the online client
    merges it into the request."""
    extra = {"top_k": 20, "min_p": 0.05}
    with TestServer(ServerConfig(batch_delay_s=0.05)) as server:
        llm = make_llm(server.url, tmp_path / "cache", params={"max_tokens": 64, "extra_body": extra}, mode="batch",
                       batch_poll_s=0.05)
        [reply] = llm.complete([(TEACHER.messages(instruction="Add 2 and 3.", input=""), {})])
        [entry] = [e for e in server.log() if e["outcome"] == "batch_ok"]
    assert isinstance(reply, Completion)
    assert {"top_k", "min_p", "max_tokens"} <= set(entry["fields"]) and "extra_body" not in entry["fields"]
