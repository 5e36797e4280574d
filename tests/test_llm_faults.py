"""The LLM client against the localhost test server: faults, retries, limits, budget."""
from __future__ import annotations

import collections
import time

import pytest

from lionflow.failures import TooManyFailures
from lionflow.imitation import teacher_answers
from lionflow.llm import BudgetExceeded, Completion, LLMFailure, ResponseCache
from lionflow.llm.ledger import Ledger
from lionflow.oracle.datasets import sample_pool
from lionflow.prompts import PromptTemplate

from conftest import PROMPTS
from conftest import make_llm as make_client
from testserver import FAULT_KINDS, ServerConfig, TestServer

TEACHER = PromptTemplate.load(PROMPTS / "teacher.yaml")


def requests_for(pool):
    return [(TEACHER.messages(instruction=p.instruction, input=p.input), {}) for p in pool]


def make_llm(server, tmp_path, *, concurrency=8, retries=3, timeout_s=5.0, rpm=None, tpm=None, price=None,
             budget_usd=None, api_key_env=None, cache="cache"):
    return make_client(server.url, tmp_path / cache, params={"max_tokens": 64}, price=price, budget_usd=budget_usd,
                       ledger_dir=str(tmp_path / "ledger"), api_key_env=api_key_env, max_concurrency=concurrency,
                       timeout_s=timeout_s, max_retries=retries, rpm=rpm, tpm=tpm)


def paid_per_key(log) -> collections.Counter:
    return collections.Counter(e["key"] for e in log if e["outcome"] == "ok")


@pytest.mark.parametrize("kinds", [(k,) for k in FAULT_KINDS] + [FAULT_KINDS], ids=list(FAULT_KINDS) + ["mixed"])
def test_every_request_answered_exactly_once_under_faults(kinds, tmp_path):
    pool = sample_pool(40, seed=len(kinds))
    config = ServerConfig(fault_rate=0.3, fault_kinds=kinds, max_faults_per_request=2, hang_s=3.0, seed=1)
    with TestServer(config) as server:
        llm = make_llm(server, tmp_path, timeout_s=0.5)
        replies = llm.complete(requests_for(pool))
        log = server.log()
    assert all(isinstance(r, Completion) for r in replies), [r for r in replies if not isinstance(r, Completion)]
    assert [r.content for r in replies] == [p.answer for p in pool]          # right answer, right place
    faults = [e for e in log if e["outcome"].startswith("fault:")]
    assert faults and {e["outcome"] for e in faults} == {f"fault:{k}" for k in kinds}
    paid = paid_per_key(log)
    assert len(paid) == len(pool) and set(paid.values()) == {1}             # no request paid twice
    assert llm.stats.paid == len(pool) and llm.stats.failures == 0
    assert llm.stats.retries == len(faults)                                  # every fault retried once, counted
    assert llm.stats.rate_limited == sum(e["outcome"] == "fault:429" for e in log)
    assert len(ResponseCache(tmp_path / "cache")) == len(pool)
    for r in replies:
        assert "error" not in r.content.lower() and "injected" not in r.content


def test_other_4xx_is_not_retried_and_names_the_request(tmp_path, monkeypatch):
    monkeypatch.setenv("LIONFLOW_TEST_KEY", "sk-wrong")
    with TestServer(ServerConfig(api_key="sk-right")) as server:
        llm = make_llm(server, tmp_path, api_key_env="LIONFLOW_TEST_KEY")
        [reply] = llm.complete(requests_for(sample_pool(1, seed=0)))
        assert len(server.log()) == 1                                        # sent once, no retry
    assert isinstance(reply, LLMFailure) and reply.kind == "AuthenticationError (HTTP 401)"
    assert "request " in reply.error and sample_pool(1, seed=0)[0].instruction[:20] in reply.error
    assert llm.stats.retries == 0 and llm.stats.failures == 1 and len(ResponseCache(tmp_path / "cache")) == 0


def _pool(n):
    return [{"id": f"i{k}", "instruction": p.instruction, "input": p.input} for k, p in enumerate(sample_pool(n, seed=0))]


def test_failures_beyond_the_rate_stop_the_stage_with_a_summary(tmp_path):
    """One policy: the client returns failures as values; the stage applies its one rate."""
    with TestServer(ServerConfig(fault_rate=1.0, fault_kinds=("500",), max_faults_per_request=10)) as server:
        llm = make_llm(server, tmp_path, retries=1)
        replies = llm.complete(requests_for(sample_pool(3, seed=0)))
        assert all(isinstance(r, LLMFailure) for r in replies)            # values, never an exception
        with pytest.raises(TooManyFailures, match=r"teacher failed on 3 of 3 requests \(100\.0%\), above "
                                                  r"llm\.failure_tolerance=10\.0% \(3 x InternalServerError"):
            teacher_answers(llm, TEACHER, _pool(3), max_failure_rate=0.1)
    assert llm.stats.retries == 6


def test_a_failure_within_the_rate_is_left_out_and_recorded(tmp_path):
    """A teacher answer that fails for good leaves its instruction out of training, recorded by id and kind."""
    with TestServer(ServerConfig(fault_rate=0.3, fault_kinds=("500",), max_faults_per_request=10, seed=3)) as server:
        llm = make_llm(server, tmp_path, retries=1)
        answers, failed = teacher_answers(llm, TEACHER, _pool(20), max_failure_rate=0.5)
    assert failed and answers and len(answers) + len(failed) == 20
    assert {f["kind"] for f in failed} == {"InternalServerError (HTTP 500)"}
    assert not {a["id"] for a in answers} & {f["id"] for f in failed}


def test_rpm_limit_is_kept_without_a_429(tmp_path):
    pool = sample_pool(40, seed=0)
    with TestServer(ServerConfig(rpm=1200)) as server:          # 20/s, a bucket of 1 s
        llm = make_llm(server, tmp_path, rpm=1200)
        started = time.monotonic()
        replies = llm.complete(requests_for(pool))
        elapsed = time.monotonic() - started
        log = server.log()
    assert all(isinstance(r, Completion) for r in replies)
    assert not [e for e in log if e["outcome"] == "rate_limited"]
    assert elapsed >= (40 - 10) / 20 * 0.95                      # at most half a second's burst ahead of the rate


def test_retry_after_is_honoured(tmp_path):
    """No client-side limit: the server's 429s + Retry-After pace the client."""
    pool = sample_pool(30, seed=0)
    with TestServer(ServerConfig(rpm=600, burst_s=0.5)) as server:  # 10/s, bucket of 5
        llm = make_llm(server, tmp_path, retries=8)
        replies = llm.complete(requests_for(pool))
        log = server.log()
    assert all(isinstance(r, Completion) for r in replies)
    rejected = [e for e in log if e["outcome"] == "rate_limited"]
    assert rejected and llm.stats.rate_limited == len(rejected) == llm.stats.retries
    # A rejected request does not come back before its Retry-After.
    by_key = collections.defaultdict(list)
    for e in log:
        by_key[e["key"]].append(e)
    for attempts in by_key.values():
        for told, next_try in zip(attempts, attempts[1:]):
            assert next_try["t"] - told["t"] >= told["retry_after_s"] - 0.005


def test_tpm_limit_books_true_usage(tmp_path):
    pool = sample_pool(60, seed=0)
    with TestServer(ServerConfig(tpm=30_000)) as server:         # 500 tokens/s, a bucket of 1 s
        llm = make_llm(server, tmp_path, tpm=30_000)
        started = time.monotonic()
        llm.complete(requests_for(pool))
        elapsed = time.monotonic() - started
        log = server.log()
    assert not [e for e in log if e["outcome"] == "rate_limited"]
    tokens = llm.stats.prompt_tokens + llm.stats.completion_tokens   # what the server counted (words)
    # The client estimates ~2x the server's count (4 characters a token vs words) but holds the
    # estimate only while in flight: the rate follows true usage, at most half a second's burst ahead.
    assert (tokens - 250) / 500 * 0.9 <= elapsed <= tokens / 500 * 1.5


def test_budget_stops_before_overspending(tmp_path):
    pool = sample_pool(30, seed=0)
    price = (1e6, 1e6)      # USD per million input, output tokens: $1 a token, easy to follow
    with TestServer(ServerConfig(latency_s=0.01)) as server:
        llm = make_llm(server, tmp_path, price=price, budget_usd=600.0, concurrency=4)
        with pytest.raises(BudgetExceeded, match=r"llm.budget_usd = \$600.0000 would be exceeded.*not sent"):
            llm.complete(requests_for(pool))
        spent = Ledger(tmp_path / "ledger").spent()
        assert 0 < llm.stats.paid < len(pool)
        assert spent == pytest.approx(llm.stats.cost_usd) and spent <= 600
        assert sum(paid_per_key(server.log()).values()) == llm.stats.paid
        # A larger budget goes on from where it stopped, paying only for the rest.
        more = make_llm(server, tmp_path, price=price, budget_usd=10_000.0)
        replies = more.complete(requests_for(pool))
        assert [r.content for r in replies] == [p.answer for p in pool]
        assert more.stats.paid == len(pool) - llm.stats.paid
        assert set(paid_per_key(server.log()).values()) == {1}
