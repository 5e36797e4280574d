"""kill -9 of a process answering a pool, then a rerun: nothing paid twice, counted at the server.

The API key (from the environment) must never reach a file under results/, logs/ or the cache.
This file is also the worker: `python tests/test_llm_crash.py WORKDIR URL` answers
WORKDIR/pool.jsonl as the teacher rule does, logging everything (DEBUG) to WORKDIR/logs/.
"""
from __future__ import annotations

import collections
import json
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from lionflow.oracle.datasets import sample_pool

from conftest import make_llm
from testserver import ServerConfig, TestServer

pytestmark = pytest.mark.slow   # processes killed and rerun against a server: tens of seconds

POOL_SIZE, CONCURRENCY, LATENCY_S = 60, 4, 0.05


def worker(workdir: Path, url: str) -> None:
    from lionflow.artifacts import write_json, write_jsonl
    from lionflow.imitation import teacher_answers
    from lionflow.prompts import PromptTemplate

    (workdir / "logs").mkdir(exist_ok=True)
    logging.basicConfig(filename=workdir / "logs" / "teacher.log", level=logging.DEBUG, force=True)
    sys.stderr = open(workdir / "logs" / "teacher.log", "a", buffering=1)   # the progress bar too
    pool = [json.loads(line) for line in open(workdir / "pool.jsonl")]
    teacher = make_llm(url, workdir / "cache", params={"max_tokens": 64}, ledger_dir=str(workdir / "cache" / "ledger"),
                       api_key_env="LIONFLOW_TEST_KEY", max_concurrency=CONCURRENCY, timeout_s=5.0, max_retries=4)
    template = PromptTemplate.load(Path(__file__).parents[1] / "resources" / "prompts" / "teacher.yaml")
    answers, _ = teacher_answers(teacher, template, pool, max_failure_rate=0.0)
    write_jsonl(workdir / "results" / "teacher.jsonl", answers, "answer")
    write_json(workdir / "results" / "llm_stats.json", teacher.stats.as_dict(teacher.role), "llm_stats")


def _setup(tmp_path):
    pool = sample_pool(POOL_SIZE, seed=7)
    with open(tmp_path / "pool.jsonl", "w") as f:
        for i, p in enumerate(pool):
            f.write(json.dumps({"id": f"i{i}", "instruction": p.instruction, "input": p.input}) + "\n")
    return pool, f"sk-test-{uuid.uuid4().hex}"


def _start(tmp_path, server, key) -> subprocess.Popen:
    env = {**os.environ, "LIONFLOW_TEST_KEY": key}
    return subprocess.Popen([sys.executable, __file__, str(tmp_path), server.url], env=env)


def _cached(tmp_path) -> int:
    return sum(1 for part in (tmp_path / "cache").glob("part-*.jsonl")
               for line in open(part) if line.endswith("\n"))


def _paid(server) -> collections.Counter:
    return collections.Counter(e["key"] for e in server.log() if e["outcome"] == "ok")


def _wait_for(condition, timeout_s=30.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def _finish_and_check(tmp_path, server, key, pool) -> collections.Counter:
    proc = _start(tmp_path, server, key)
    assert proc.wait(60) == 0, (tmp_path / "logs" / "teacher.log").read_text()[-2000:]
    answers = [json.loads(line) for line in open(tmp_path / "results" / "teacher.jsonl")]
    assert [a["answer"] for a in answers] == [p.answer for p in pool]
    paid = _paid(server)
    assert len(paid) == len(pool)
    _assert_no_secret(tmp_path, key)
    return paid


def _assert_no_secret(tmp_path, key):
    files = [p for d in ("results", "logs", "cache") for p in (tmp_path / d).rglob("*") if p.is_file()]
    assert any(p.suffix == ".log" for p in files) and any("part-" in p.name for p in files)
    leaks = [str(p) for p in files if key.encode() in p.read_bytes()]
    assert not leaks, f"API key found in {leaks}"


def test_kill_at_several_moments_then_rerun_pays_nothing_twice(tmp_path):
    pool, key = _setup(tmp_path)
    config = ServerConfig(latency_s=LATENCY_S, api_key=key)
    with TestServer(config) as server:
        for after in (1, POOL_SIZE // 3, 2 * POOL_SIZE // 3):
            proc = _start(tmp_path, server, key)
            _wait_for(lambda after=after: sum(_paid(server).values()) >= after)
            server.set_hold(True)      # requests arriving now stay in flight, unanswered...
            _wait_for(lambda: _cached(tmp_path) == sum(_paid(server).values()))  # ...the answered are stored
            time.sleep(LATENCY_S * 2)
            _wait_for(lambda: _cached(tmp_path) == sum(_paid(server).values()))
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            server.set_hold(False)     # the held requests find their client gone: not paid
        _wait_for(lambda: any(e["outcome"] == "client_gone" for e in server.log()))  # killed with requests in flight
        assert _cached(tmp_path) < POOL_SIZE
        paid = _finish_and_check(tmp_path, server, key, pool)
    assert set(paid.values()) == {1}, "a request answered before the kill was paid again"


def test_kill_at_an_arbitrary_moment_under_faults(tmp_path):
    """Without the hold, answers in transit at the kill (at most the requests in flight) may be paid again."""
    pool, key = _setup(tmp_path)
    config = ServerConfig(latency_s=LATENCY_S, api_key=key, fault_rate=0.2, hang_s=6.0)
    with TestServer(config) as server:
        proc = _start(tmp_path, server, key)
        _wait_for(lambda: sum(_paid(server).values()) >= POOL_SIZE // 2)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        paid = _finish_and_check(tmp_path, server, key, pool)
    repeated = sum(n - 1 for n in paid.values())
    assert repeated <= CONCURRENCY


if __name__ == "__main__":
    worker(Path(sys.argv[1]), sys.argv[2])
