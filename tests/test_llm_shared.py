"""The run, not the process, is the unit of spending: jobs running at once against the test server.

Two and three concurrent jobs asking overlapping requests pay each unique request once (counted
at the server); a kill -9 of one job mid-way leaves the others to finish, and its rerun pays only
what was never answered; one RPM limit and one budget hold for the sum of the jobs; offline
replay; the teacher-drift guard; transport errors name the role, the endpoint and its URL.

This file is also the worker: `python tests/test_llm_shared.py WORKDIR URL NAME` answers the
job WORKDIR/job-NAME.json describes (after WORKDIR/go exists) and writes WORKDIR/out-NAME.json.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from lionflow.llm import (
    LLM,
    BudgetExceeded,
    Completion,
    LLMFailure,
    OfflineMiss,
    ResponseCache,
    TeacherChanged,
)
from lionflow.llm.ledger import Ledger
from lionflow.oracle.datasets import sample_pool
from lionflow.prompts import PromptTemplate

from conftest import make_role
from testserver import ServerConfig, TestServer

ROOT = Path(__file__).resolve().parents[1]
TEACHER = PromptTemplate.load(ROOT / "resources" / "prompts" / "teacher.yaml")
POOL = sample_pool(80, seed=11)


def _role(url, workdir, *, concurrency=4, rpm=None, price=None, budget_usd=None, lease_s=30.0, offline=False,
          pin=False, api_key_env=None, retries=3, model="oracle-1"):
    return make_role(url, model=model, params={"max_tokens": 64}, price=price, budget_usd=budget_usd,
                     ledger_dir=str(Path(workdir) / "ledger"), lease_s=lease_s, offline=offline, pin_fingerprint=pin,
                     api_key_env=api_key_env, max_concurrency=concurrency, timeout_s=5.0, max_retries=retries, rpm=rpm)


def _requests(indices):
    return [(TEACHER.messages(instruction=POOL[i].instruction, input=POOL[i].input), {}) for i in indices]


def worker(workdir: Path, url: str, name: str) -> None:
    job = json.loads((workdir / f"job-{name}.json").read_text())
    (workdir / "logs").mkdir(exist_ok=True)
    logging.basicConfig(filename=workdir / "logs" / f"{name}.log", level=logging.INFO, force=True)
    sys.stderr = open(workdir / "logs" / f"{name}.log", "a", buffering=1)
    price = job.get("price")
    role = _role(url, workdir, concurrency=job.get("concurrency", 4), rpm=job.get("rpm"), price=price,
                 budget_usd=job.get("budget_usd"), lease_s=job.get("lease_s", 30.0))
    llm = LLM(role, ResponseCache(workdir / "cache"))
    (workdir / f"ready-{name}").touch()
    while not (workdir / "go").exists():
        time.sleep(0.005)
    error, replies = None, []
    try:
        replies = llm.complete(_requests(job["indices"]), ids=[f"i{i}" for i in job["indices"]])
    except BudgetExceeded as e:
        error = str(e)
    out = {"answers": [r.content if isinstance(r, Completion) else None for r in replies],
           "stats": llm.stats.as_dict(role), "error": error}
    (workdir / f"out-{name}.json").write_text(json.dumps(out))


def _start(workdir: Path, server, name: str, **job) -> subprocess.Popen:
    (workdir / f"job-{name}.json").write_text(json.dumps(job))
    return subprocess.Popen([sys.executable, __file__, str(workdir), server.url, name])


def _run_jobs(workdir, server, jobs: dict[str, dict], timeout=120) -> dict[str, dict]:
    procs = {name: _start(workdir, server, name, **job) for name, job in jobs.items()}
    _wait_for(lambda: all((workdir / f"ready-{name}").exists() for name in jobs), 60)   # imports done...
    (workdir / "go").touch()                                                            # ...then all at once
    for name, proc in procs.items():
        assert proc.wait(timeout) == 0, (workdir / "logs" / f"{name}.log").read_text()[-3000:]
    return {name: json.loads((workdir / f"out-{name}.json").read_text()) for name in jobs}


def _paid(log) -> collections.Counter:
    return collections.Counter(e["key"] for e in log if e.get("outcome") == "ok")


def _cached(workdir) -> int:
    return len(ResponseCache(workdir / "cache"))


def _wait_for(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


@pytest.mark.parametrize("n_jobs", [2, 3])
def test_concurrent_jobs_pay_each_unique_request_once(n_jobs, tmp_path):
    # Overlapping pools, asked in different orders: 0-49, 30-79 (reversed), 15-64.
    asks = [list(range(0, 50)), list(range(79, 29, -1)), list(range(15, 65))][:n_jobs]
    with TestServer(ServerConfig(latency_s=0.05)) as server:
        outs = _run_jobs(tmp_path, server, {f"job{j}": {"indices": a} for j, a in enumerate(asks)})
        log = server.log()
    unique = set().union(*map(set, asks))
    paid = _paid(log)
    assert len(paid) == len(unique) and set(paid.values()) == {1}, "a request was paid twice across jobs"
    assert len({e["key"] for e in log}) == len(unique)                  # nothing else was even sent
    for j, a in enumerate(asks):
        assert outs[f"job{j}"]["answers"] == [POOL[i].answer for i in a]
    stats = [o["stats"] for o in outs.values()]
    assert sum(s["paid"] for s in stats) == len(unique)                 # each job's stats agree with the server
    assert sum(s["shared"] for s in stats) > 0                          # answers flowed between the jobs
    for s in stats:
        assert s["requests"] == s["paid"] + s["cache_hits"] and s["failures"] == 0


def test_kill_9_of_one_job_the_others_finish_and_its_rerun_pays_only_the_unanswered(tmp_path):
    a, b, c = list(range(79, -1, -1)), list(range(0, 40)), list(range(20, 60))   # a alone asks 60-79
    with TestServer(ServerConfig(latency_s=0.05)) as server:
        server.allow(8)                    # the server answers exactly 8, then holds every request...
        procs = {"a": _start(tmp_path, server, "a", indices=a)}
        (tmp_path / "go").touch()
        _wait_for(lambda: _cached(tmp_path) == 8)
        procs.update(b=_start(tmp_path, server, "b", indices=b), c=_start(tmp_path, server, "c", indices=c))
        server.allow(8)                    # ...8 more, whoever asks: at most 16 of a's 20 are ever answered
        _wait_for(lambda: _cached(tmp_path) == 16 == sum(_paid(server.log()).values()))   # the answered are stored
        _wait_for(lambda: server.waiting() == 12)   # each job has its 4 requests held in flight
        procs["a"].send_signal(signal.SIGKILL)
        procs["a"].wait()
        server.allow(None)                 # a's held requests find it gone: not paid; b and c take over its claims
        for name in "bc":
            assert procs[name].wait(60) == 0, (tmp_path / "logs" / f"{name}.log").read_text()[-3000:]
        answered = _cached(tmp_path)
        assert answered < 80 and not (tmp_path / "out-a.json").exists()
        for name, asked in (("b", b), ("c", c)):
            assert json.loads((tmp_path / f"out-{name}.json").read_text())["answers"] == [POOL[i].answer for i in asked]
        rerun = _start(tmp_path, server, "a", indices=a)
        assert rerun.wait(60) == 0, (tmp_path / "logs" / "a.log").read_text()[-3000:]
        log = server.log()
    out = json.loads((tmp_path / "out-a.json").read_text())
    assert out["answers"] == [POOL[i].answer for i in a]
    assert out["stats"]["paid"] == 80 - answered                        # only what was never answered
    paid = _paid(log)
    assert len(paid) == 80 and set(paid.values()) == {1}, "a request was paid twice"
    assert any(e["outcome"] == "client_gone" for e in log)              # a died with requests in flight


def test_one_rpm_limit_for_all_jobs(tmp_path):
    """Three jobs configured with the endpoint's 1,200 RPM share it: no 429, the sum keeps to 20/s."""
    asks = [list(range(0, 30)), list(range(30, 60)), list(range(60, 80)) + list(range(0, 10))]
    with TestServer(ServerConfig(rpm=1200)) as server:                  # 20/s, a bucket of 1 s
        _run_jobs(tmp_path, server, {f"job{j}": {"indices": a, "rpm": 1200, "concurrency": 8}
                                     for j, a in enumerate(asks)})
        log = server.log()
    assert not [e for e in log if e["outcome"] == "rate_limited"], "the jobs together passed the RPM limit"
    times = sorted(e["t"] for e in log if e["outcome"] == "ok")
    assert len(times) == 80 and times[-1] - times[0] >= (80 - 20) / 20 * 0.9   # a second's burst ahead of 20/s at most


def test_one_budget_for_all_jobs(tmp_path):
    price = (1e6, 1e6)                                                   # $1 a token: easy to follow
    budget = 900.0
    asks = [list(range(0, 30)), list(range(30, 60)), list(range(50, 80))]
    with TestServer(ServerConfig(latency_s=0.02)) as server:
        outs = _run_jobs(tmp_path, server, {f"job{j}": {"indices": a, "price": price, "budget_usd": budget}
                                            for j, a in enumerate(asks)})
        log = server.log()
    spent = Ledger(tmp_path / "ledger").spent()
    assert 0 < spent <= budget
    assert spent == pytest.approx(sum(o["stats"]["cost_usd"] for o in outs.values()))
    assert any(o["error"] and "llm.budget_usd = $900.0000 would be exceeded" in o["error"] for o in outs.values())
    assert sum(_paid(log).values()) == sum(o["stats"]["paid"] for o in outs.values())
    # Each job returned what it did not use: the allowance log sums to what was spent.
    grants = [json.loads(p.read_text())["usd"] for p in (tmp_path / "ledger" / "allowance").iterdir()
              if p.name.isdigit()]
    assert sum(grants) == pytest.approx(spent)


def test_a_dead_holder_on_another_node_loses_its_claim_after_the_lease(tmp_path):
    """A claim by a process on another host (its heartbeat stopped) is taken over after lease_s;
    while its heartbeat goes on, its answer is read from its part file instead of paid for."""
    from lionflow.llm.presence import Presence
    LEASE_S = 2.0                         # (holder 1 beats every 0.05 s: a loaded machine must not stall it that long)
    with TestServer(ServerConfig()) as server:
        role = _role(server.url, tmp_path, lease_s=LEASE_S)
        llm = LLM(role, ResponseCache(tmp_path / "cache"))
        keys = [llm.key(m, e) for m, e in _requests([0, 1])]
        root = tmp_path / "cache"
        Presence.of(root, LEASE_S)                                       # claims/ and live/ exist
        for n, key in enumerate(keys):
            holder = f"othernode-4242-0000000{n}"
            live = root / "live" / f"{holder}.0"
            live.write_text(json.dumps({"holder": holder, "host": "othernode", "pid": 4242,
                                        "part": f"part-{holder}.jsonl", "file": f"live/{holder}.0"}))
            (root / "claims" / key[:2]).mkdir(parents=True, exist_ok=True)
            os.link(live, root / "claims" / key[:2] / f"{key}.0")
        alive_live = root / "live" / "othernode-4242-00000001.0"
        stop = threading.Event()

        def other_node():                 # holder 1 keeps beating and answers after 1.5 leases
            started = time.monotonic()
            while not stop.wait(0.05):
                os.utime(alive_live)
                if time.monotonic() - started > 1.5 * LEASE_S:
                    entry = {"key": keys[1], "model": "oracle-1", "content": POOL[1].answer, "finish_reason": "stop",
                             "usage": {}, "served_model": "oracle-1", "system_fingerprint": None}
                    with open(root / "part-othernode-4242-00000001.jsonl", "a") as f:
                        f.write(json.dumps(entry) + "\n")
                    return
        thread = threading.Thread(target=other_node)
        thread.start()
        started = time.monotonic()
        try:
            replies = llm.complete(_requests([0, 1]))
        finally:
            stop.set()
            thread.join()
        took = time.monotonic() - started
        log = server.log()
    assert [r.content for r in replies] == [POOL[0].answer, POOL[1].answer]
    assert len(_paid(log)) == 1 and llm.stats.paid == 1 and llm.stats.shared == 1   # 0 paid, 1 read
    assert LEASE_S <= took < 10
    assert (root / "claims" / keys[0][:2] / f"{keys[0]}.1").exists()     # taken over: generation 1


def test_offline_serves_from_the_cache_and_names_what_is_missing(tmp_path):
    with TestServer(ServerConfig()) as server:
        LLM(_role(server.url, tmp_path), ResponseCache(tmp_path / "cache")).complete(_requests(range(5)))
        url = server.url
    # The server is gone and the key unset: offline needs neither.
    offline = LLM(_role(url, tmp_path, offline=True, api_key_env="LIONFLOW_UNSET_KEY"),
                  ResponseCache(tmp_path / "cache"))
    replies = offline.complete(_requests(range(5)), ids=[f"i{i}" for i in range(5)])
    assert [r.content for r in replies] == [POOL[i].answer for i in range(5)] and all(r.cached for r in replies)
    assert offline.stats.paid == 0 and offline.stats.cache_hits == 5
    missing_key = offline.key(*_requests([7])[0])
    with pytest.raises(OfflineMiss) as e:
        offline.complete(_requests([0, 7, 8]), ids=["i0", "i7", "i8"])
    message = str(e.value)
    assert "llm.offline" in message and "teacher" in message and "instruction i7" in message and missing_key in message


def test_fingerprint_change_is_a_warning_or_with_pin_an_error(tmp_path, caplog):
    with TestServer(ServerConfig(system_fingerprint="fp_a")) as server:
        first = LLM(_role(server.url, tmp_path), ResponseCache(tmp_path / "cache"))
        replies = first.complete(_requests(range(4)))
        assert {(r.model, r.system_fingerprint) for r in replies} == {("oracle-1", "fp_a")}
        assert first.stats.as_dict(first.role)["served_by"] == [
            {"model": "oracle-1", "system_fingerprint": "fp_a", "answers": 4}]
        assert ResponseCache(tmp_path / "cache").get(first.key(*_requests([0])[0]))[
            "system_fingerprint"] == "fp_a"
        server.reconfigure(system_fingerprint="fp_b")                    # the provider updates the teacher
        # Another stage of the run (same ledger) sees the change: a warning, in the log and its stats.
        second = LLM(_role(server.url, tmp_path), ResponseCache(tmp_path / "cache"))
        with caplog.at_level(logging.WARNING):
            second.complete(_requests(range(4, 8)))
        stats = second.stats.as_dict(second.role)
        assert stats["served_by"] == [{"model": "oracle-1", "system_fingerprint": "fp_b", "answers": 4}]
        assert len(stats["warnings"]) == 1 and "fp_a" in stats["warnings"][0] and "fp_b" in stats["warnings"][0]
        assert any("changed within the run" in r.getMessage() for r in caplog.records)
        # Pinned: the change is an error; what was paid for is cached all the same.
        server.reconfigure(system_fingerprint="fp_c", served_model="oracle-1-2026-11-01")
        pinned = LLM(_role(server.url, tmp_path / "run2", pin=True), ResponseCache(tmp_path / "cache"))
        pinned.complete(_requests(range(8, 10)))                        # a new run: one teacher so far
        server.reconfigure(system_fingerprint="fp_d")
        with pytest.raises(TeacherChanged, match=r"teacher via llm.endpoints.test .*fp_c.*fp_d"):
            pinned.complete(_requests(range(10, 14)))
    assert all(ResponseCache(tmp_path / "cache").get(pinned.key(m, e)) is not None
               for m, e in _requests(range(10, 11)))


@pytest.mark.parametrize("case", ["refused", "401", "404", "unknown model"])
def test_transport_errors_name_role_endpoint_and_url_never_the_key(case, tmp_path, monkeypatch):
    secret = "sk-test-secret-0123456789"
    monkeypatch.setenv("LIONFLOW_TEST_KEY", secret)
    config = ServerConfig(api_key="sk-other" if case == "401" else secret,
                          models=("oracle-1",) if case == "unknown model" else None)
    with TestServer(config) as server:
        url = {"refused": "http://127.0.0.1:9/v1",
               "404": server.url.removesuffix("/v1") + "/nope"}.get(case, server.url)
        role = _role(url, tmp_path, api_key_env="LIONFLOW_TEST_KEY", retries=1,
                     model="gpt-unknown" if case == "unknown model" else "oracle-1")
        [reply] = LLM(role, ResponseCache(tmp_path / "cache")).complete(_requests([0]), ids=["i0"])
    assert isinstance(reply, LLMFailure)
    assert f"teacher via llm.endpoints.test ({url})" in reply.error and "for i0" in reply.error
    assert secret not in reply.error


def test_a_missing_key_names_the_role_endpoint_url_and_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("LIONFLOW_UNSET_KEY", raising=False)
    role = _role("http://127.0.0.1:9/v1", tmp_path, api_key_env="LIONFLOW_UNSET_KEY")
    with pytest.raises(RuntimeError, match=r"teacher via llm.endpoints.test \(http://127.0.0.1:9/v1\): environment "
                                           r"variable LIONFLOW_UNSET_KEY is not set"):
        LLM(role, ResponseCache(tmp_path / "cache")).complete(_requests([0, 1]))
    assert not list((tmp_path / "cache" / "claims").rglob("*.0"))       # nothing left claimed


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2], sys.argv[3])
