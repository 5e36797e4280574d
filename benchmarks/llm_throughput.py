"""LLM client throughput against the localhost test server, as a fraction of the endpoint's limit.

Scenarios (the server runs in its own process; our client, a bare AsyncOpenAI loop and a naive
one-at-a-time loop run here, side by side in the same run):
  realistic  latency 1 s, capacity 128 concurrent            limit 128 req/s (the server queues the rest)
  rpm        RPM cap 3,000, latency 100 ms                   limit 50 req/s, 0 rejections wanted
  tpm        TPM cap 300,000 under an RPM cap of 30,000      the TPM binds (~30 tokens a request)
  stress     latency 200 ms, capacity 64                     limit 320 req/s; CPU/request vs bare SDK
  faults     20 % injected faults of every kind, 50 ms       completion, duplicates, lost, paid/unique
  shared     3 concurrent jobs (processes), one RPM cap of 3,000 for all, latency 100 ms: limit 50 req/s
             in total, 0 rejections wanted; each job asks a third of the requests plus a tenth of
             another job's (paid once: paid/unique at the server); and the per-request cost of the
             cross-process machinery (claim, cache append, waiter path) next to the single-process path
Usage: python benchmarks/llm_throughput.py [--requests 5000] [--scenarios realistic,rpm,tpm,stress,faults,shared]
       python benchmarks/llm_throughput.py --smoke    # every scenario with 30 requests, the same JSON keys
Prints a table; the last line is one JSON object with `<scenario>.fraction_of_limit` and the rest, also
when a scenario fails (`failed_stage`: benchmarks/stages.py).
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import openai
import psutil
import yaml
from snakemake.utils import validate
from stages import Stages

from lionflow.llm import LLM, Completion, ResponseCache
from lionflow.oracle.datasets import sample_pool
from lionflow.prompts import PromptTemplate
from lionflow.smk import llm_for

ROOT = Path(__file__).resolve().parents[1]
TEACHER = PromptTemplate.load(ROOT / "resources" / "prompts" / "teacher.yaml")
PARAMS = {"max_tokens": 64}
run = Stages("llm_throughput")


class Server:
    """The test server in its own process (so that its CPU is not ours)."""

    def __init__(self, **options):
        self.dir = tempfile.mkdtemp(prefix="lionflow-bench-")
        port_file = os.path.join(self.dir, "port")
        args = [sys.executable, str(ROOT / "tests" / "testserver.py"), "--port", "0", "--port-file", port_file]
        for k, v in options.items():
            args += [f"--{k.replace('_', '-')}", str(v)]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file):
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"test server did not start: {args}")
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{open(port_file).read()}/v1"
        self.ps = psutil.Process(self.proc.pid)

    def cpu_s(self) -> float:
        t = self.ps.cpu_times()
        return t.user + t.system

    def log(self) -> list[dict]:
        with urllib.request.urlopen(self.url.replace("/v1", "/_testserver/log"), timeout=60) as r:
            return json.load(r)["log"]

    def close(self):
        self.proc.kill()
        self.proc.wait()


def requests_for(n: int, seed: int):
    return [(TEACHER.messages(instruction=p.instruction, input=p.input), {}) for p in sample_pool(n, seed)]


def teacher(url, cache_dir, ledger_dir, **endpoint) -> LLM:
    """The teacher's client as a run builds it: from config/config.yaml's llm section, validated against the
    schema (its defaults), with one endpoint `bench` at `url` (`endpoint`: its keys)."""
    config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
    llm = config["llm"]
    llm |= {"cache_dir": str(cache_dir), "ledger_dir": str(ledger_dir), "endpoints": {"bench": {"base_url": url, **endpoint}}}
    llm["teacher"] |= {"endpoint": "bench", "model": "oracle-1", "params": dict(PARAMS)}
    for role in ("referee", "generator"):
        llm[role]["endpoint"] = "bench"
    validate(config, str(ROOT / "config" / "schema.yaml"))
    return llm_for({"llm": llm}, "teacher")


def run_ours(url, reqs, *, concurrency, rpm=None, tpm=None, timeout_s=30.0, retries=5):
    with tempfile.TemporaryDirectory() as cache:
        llm = teacher(url, cache, os.path.join(cache, "ledger"), max_concurrency=concurrency, timeout_s=timeout_s,
                      max_retries=retries, rpm=rpm, tpm=tpm)
        cpu, t = time.process_time(), time.monotonic()
        replies = llm.complete(reqs, desc="ours")
        return replies, time.monotonic() - t, time.process_time() - cpu, llm.stats


def run_bare(url, reqs, *, concurrency):
    """The baseline: one AsyncOpenAI client, a semaphore, gather (no cache, limiter or bookkeeping)."""
    async def main():
        client = openai.AsyncOpenAI(base_url=url, api_key="unused", timeout=30.0)
        slots = asyncio.Semaphore(concurrency)

        async def one(messages):
            async with slots:
                r = await client.chat.completions.create(model="oracle-1", messages=messages, **PARAMS)
                return r.choices[0].message.content
        try:
            return await asyncio.gather(*(one(m) for m, _ in reqs))
        finally:
            await client.close()
    cpu, t = time.process_time(), time.monotonic()
    asyncio.run(main())
    return time.monotonic() - t, time.process_time() - cpu


def run_naive(url, reqs) -> float:
    """The paper's loop without its sleep: one request at a time, synchronously. Returns req/s."""
    client = openai.OpenAI(base_url=url, api_key="unused", timeout=30.0)
    t = time.monotonic()
    for messages, _ in reqs:
        client.chat.completions.create(model="oracle-1", messages=messages, **PARAMS)
    return len(reqs) / (time.monotonic() - t)


def server_outcomes(log) -> collections.Counter:
    return collections.Counter(e["outcome"] for e in log if e.get("path") == "/v1/chat/completions")


def scenario(name, n, server_opts, client_opts, limit_req_s=None, limit_tok_s=None, naive_n=10, bare=False):
    server = Server(**server_opts)
    try:
        naive = run_naive(server.url, requests_for(naive_n, seed=99))
        reqs = requests_for(n, seed=1)
        row = {}
        if bare:   # the bare SDK loop first, then ours, on the same server and requests set
            bare_wall, bare_cpu = run_bare(server.url, requests_for(n, seed=2), concurrency=client_opts["concurrency"])
            row.update(bare_req_s=round(n / bare_wall, 1), bare_cpu_ms_per_req=round(1000 * bare_cpu / n, 3),
                       bare_fraction_of_limit=round(n / bare_wall / limit_req_s, 3))
        before = len(server.log())
        server_cpu = server.cpu_s()
        replies, wall, cpu, stats = run_ours(server.url, reqs, **client_opts)
        server_cpu = server.cpu_s() - server_cpu
        log = server.log()[before:]
    finally:
        server.close()
    outcomes = server_outcomes(log)
    req_s = n / wall
    tok_s = (stats.prompt_tokens + stats.completion_tokens) / wall
    row.update(scenario=name, requests=n, concurrency=client_opts["concurrency"], wall_s=round(wall, 2), req_s=round(req_s, 1), tok_s=round(tok_s))
    if limit_req_s or limit_tok_s:
        row["fraction_of_limit"] = round(tok_s / limit_tok_s if limit_tok_s else req_s / limit_req_s, 3)
    row.update(naive_req_s=round(naive, 2), ratio_to_naive=round(req_s / naive, 1),
               cpu_ms_per_req=round(1000 * cpu / n, 3), server_cpu_ms_per_req=round(1000 * server_cpu / n, 3),
               rejected_429=outcomes["rate_limited"], retries=stats.retries, failures=stats.failures,
               answered=sum(isinstance(r, Completion) for r in replies))
    if bare:
        row["cpu_ratio_to_bare"] = round(row["cpu_ms_per_req"] / row["bare_cpu_ms_per_req"], 3)
    if name == "faults":
        paid = collections.Counter(e["key"] for e in log if e["outcome"] == "ok")
        unique = len(set(e["key"] for e in log))
        # Faulted bodies (malformed, truncated, dropped) were computed by the server: a provider may bill them.
        computed = sum(v for k, v in outcomes.items() if k in ("ok", "fault:malformed_json", "fault:truncated",
                                                                "fault:drop"))
        row.update(completion_rate=round(row["answered"] / n, 4), duplicates=sum(v - 1 for v in paid.values()),
                   lost=n - row["answered"], paid_per_unique=round(sum(paid.values()) / unique, 4),
                   computed_per_unique=round(computed / unique, 4),
                   faults_injected=sum(v for k, v in outcomes.items() if k.startswith("fault:")))
    return row


def shared_worker(workdir: str, url: str, name: str) -> None:
    """One job of the shared scenario (a process of its own): answer its requests, report wall and CPU."""
    job = json.loads(Path(workdir, f"job-{name}.json").read_text())
    llm = teacher(url, os.path.join(workdir, "cache"), os.path.join(workdir, "ledger"),
                  max_concurrency=job["concurrency"], timeout_s=30.0, max_retries=5, rpm=job["rpm"])
    reqs = [r for seed, lo, hi in job["slices"] for r in requests_for(hi, seed)[lo:hi]]
    Path(workdir, f"ready-{name}").touch()
    while not Path(workdir, "go").exists():
        time.sleep(0.001)
    cpu, t, began = time.process_time(), time.monotonic(), time.time()
    replies = llm.complete(reqs, desc=name)
    out = {"wall_s": time.monotonic() - t, "cpu_s": time.process_time() - cpu, "requests": len(reqs),
           "began": began, "ended": time.time(),
           "answered": sum(isinstance(r, Completion) for r in replies), "stats": llm.stats.as_dict(llm.role)}
    Path(workdir, f"out-{name}.json").write_text(json.dumps(out))


def machinery_cost(n: int = 2000) -> dict:
    """Microseconds per request of the cross-process machinery on this filesystem (tmp dir), next to
    the single-process path it adds to (an append to a kept-open file)."""
    from lionflow.llm.claims import Claims
    from lionflow.llm.presence import Presence
    with tempfile.TemporaryDirectory() as d:
        keys = [f"{i:064x}" for i in range(n)]
        cache = ResponseCache(os.path.join(d, "cache"))
        claims = Claims(cache, Presence.of(cache.dir, 30.0))
        entry = {"model": "m", "content": "x" * 200, "finish_reason": "stop", "usage": {}}
        line = (json.dumps({"key": keys[0], **entry}) + "\n").encode()
        fd = os.open(os.path.join(d, "single.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        t = time.perf_counter()
        for _ in keys:                                  # what one answer cost before: one write to an open file
            os.write(fd, line)
        single = time.perf_counter() - t
        os.close(fd)
        t = time.perf_counter()
        for k in keys:                                  # sender: claim, answer appended (open/write/close), done
            claims.claim(k)
            cache.put(k, entry)
            claims.release(k, 0, answered=True)
        sender = time.perf_counter() - t
        other = ResponseCache(cache.dir)                # another job: finds each key claimed and answered
        other._entries = {}
        other_claims = Claims(other, Presence.of(cache.dir, 30.0))
        t = time.perf_counter()
        for k in keys:
            other_claims.claim(k)
        waiter = time.perf_counter() - t
        t = time.perf_counter()
        for _ in range(200):                            # what a waiting job does every POLL_S
            other.refresh(also=(cache.part_name,), listing=False)
        poll = time.perf_counter() - t
    return {"single_append_us": round(1e6 * single / n, 2), "claim_put_release_us": round(1e6 * sender / n, 2),
            "overhead_per_paid_request_us": round(1e6 * (sender - single) / n, 2),
            "waiter_claim_and_read_us": round(1e6 * waiter / n, 2), "poll_round_us": round(1e6 * poll / 200, 2)}


def shared_scenario(n: int, jobs: int = 3, rpm: int = 3000, latency_s: float = 0.1, concurrency: int = 32):
    server = Server(latency_s=latency_s, rpm=rpm)
    workdir = tempfile.mkdtemp(prefix="lionflow-shared-")
    try:
        third = n // jobs
        procs = []
        for j in range(jobs):
            # Job j: its own third (seed 10 + j) and the first tenth of job j+1's (asked by both).
            slices = [(10 + j, 0, third), (10 + (j + 1) % jobs, 0, third // 10)]
            Path(workdir, f"job-{j}.json").write_text(json.dumps({"slices": slices, "rpm": rpm,
                                                                   "concurrency": concurrency}))
            procs.append(subprocess.Popen([sys.executable, __file__, "--shared-worker", workdir, server.url, str(j)]))
        deadline = time.monotonic() + 120
        while not all(Path(workdir, f"ready-{j}").exists() for j in range(jobs)):
            if time.monotonic() > deadline or any(p.poll() not in (None, 0) for p in procs):
                raise RuntimeError("shared scenario: a job did not start")
            time.sleep(0.05)
        before = len(server.log())
        server_cpu = server.cpu_s()
        go = time.time()
        Path(workdir, "go").touch()
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError(f"shared scenario: a job failed (rc {p.returncode})")
        server_cpu = server.cpu_s() - server_cpu
        log = server.log()[before:]
        outs = [json.loads(Path(workdir, f"out-{j}.json").read_text()) for j in range(jobs)]
        wall = max(o["ended"] for o in outs) - go        # from the start signal to the last answer
    finally:
        server.close()
        shutil.rmtree(workdir, ignore_errors=True)
    outcomes = server_outcomes(log)
    paid = collections.Counter(e["key"] for e in log if e["outcome"] == "ok")
    asked = sum(o["requests"] for o in outs)
    unique = len(paid)
    cpu = sum(o["cpu_s"] for o in outs)
    row = {"scenario": "shared", "requests": asked, "concurrency": f"{jobs}x{concurrency}", "wall_s": round(wall, 2),
           "req_s": round(sum(paid.values()) / wall, 1),
           "fraction_of_limit": round(sum(paid.values()) / wall / (rpm / 60), 3),
           "rejected_429": outcomes["rate_limited"], "paid_at_server": sum(paid.values()), "unique": unique,
           "paid_per_unique": round(sum(paid.values()) / unique, 4),
           "shared_answers": sum(o["stats"]["shared"] for o in outs),
           "answered": sum(o["answered"] for o in outs),
           "cpu_ms_per_req": round(1000 * cpu / asked, 3), "server_cpu_ms_per_req": round(1000 * server_cpu / asked, 3),
           "retries": sum(o["stats"]["retries"] for o in outs), "failures": sum(o["stats"]["failures"] for o in outs),
           "job_wall_s": [round(o["wall_s"], 2) for o in outs],
           "job_start_s": [round(o["began"] - go, 2) for o in outs]}
    row.update({f"machinery.{k}": v for k, v in machinery_cost().items()})
    return row


SCENARIOS = {
    # More in flight than the server's capacity keeps its queue from running dry while our one core
    # handles a wave of answers (with exactly 128 the slots idle ~0.2 s per wave: 0.84 of the limit).
    "realistic": lambda n: scenario("realistic", n, {"latency_s": 1.0, "capacity": 128}, {"concurrency": 160},
                                    limit_req_s=128, naive_n=3),
    "rpm": lambda n: scenario("rpm", n, {"latency_s": 0.1, "rpm": 3000}, {"concurrency": 32, "rpm": 3000},
                              limit_req_s=50, naive_n=10),
    "tpm": lambda n: scenario("tpm", n, {"latency_s": 0.1, "rpm": 30000, "tpm": 300000},
                              {"concurrency": 64, "rpm": 30000, "tpm": 300000}, limit_tok_s=5000, naive_n=10),
    "stress": lambda n: scenario("stress", n, {"latency_s": 0.2, "capacity": 64}, {"concurrency": 96},
                                 limit_req_s=320, naive_n=5, bare=True),
    "faults": lambda n: scenario("faults", n, {"latency_s": 0.05, "fault_rate": 0.2, "hang_s": 3.0},
                                 {"concurrency": 64, "timeout_s": 1.0}, naive_n=10),
    "shared": shared_scenario,
}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=5000, help="requests per scenario (the issue: 5,000)")
    ap.add_argument("--scenarios", default=",".join(SCENARIOS))
    args = run.parse(ap, smoke=dict(requests=30))
    rows = []
    for name in args.scenarios.split(","):
        run.stage(name)
        rows.append(SCENARIOS[name](args.requests))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        run.figures |= {f"{name}.{k}": v for k, v in rows[-1].items() if k != "scenario"}
    run.stage("report")
    cols = ["scenario", "requests", "concurrency", "wall_s", "req_s", "tok_s", "fraction_of_limit", "naive_req_s", "ratio_to_naive",
            "cpu_ms_per_req", "bare_cpu_ms_per_req", "cpu_ratio_to_bare", "bare_fraction_of_limit",
            "server_cpu_ms_per_req", "rejected_429", "retries", "failures"]
    print("  ".join(f"{c:>14}" for c in cols))
    for r in rows:
        print("  ".join(f"{str(r.get(c, '-')):>14}" for c in cols))
    for r in rows:
        if r["scenario"] == "shared":
            print(f"shared: {r['requests']} asked by 3 jobs, {r['unique']} unique, paid at the server "
                  f"{r['paid_at_server']} (paid/unique {r['paid_per_unique']}), {r['req_s']} req/s = "
                  f"{r['fraction_of_limit']} of the 3,000 RPM cap, {r['rejected_429']} rejected; machinery per "
                  f"paid request {r['machinery.overhead_per_paid_request_us']} us (claim+put+release "
                  f"{r['machinery.claim_put_release_us']} us vs single-process append "
                  f"{r['machinery.single_append_us']} us), waiter {r['machinery.waiter_claim_and_read_us']} us/request, "
                  f"poll round {r['machinery.poll_round_us']} us")
        if r["scenario"] == "faults":
            print(f"faults: completion {r['completion_rate']}, duplicates {r['duplicates']}, lost {r['lost']}, "
                  f"paid/unique {r['paid_per_unique']} (computed incl. faulted bodies/unique {r['computed_per_unique']}), faults injected {r['faults_injected']}, retries {r['retries']}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["--shared-worker"]:
        shared_worker(*sys.argv[2:5])
    else:
        run.main(main)
