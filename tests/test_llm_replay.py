"""The micro run against the test server on localhost with `snakemake -c2`: every unique request
is paid once at the server, whatever Snakemake runs at once; then the run rebuilt from its cache
alone (`llm.offline: true`, the server gone) reproduces its artifacts byte for byte, at zero cost."""

import collections
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from lionflow.artifacts import read_json

from conftest import ROOT
from testserver import ServerConfig, TestServer

pytestmark = pytest.mark.slow

SOURCES = ("Snakefile", "rules", "workflow", "config", "resources", "tests")
# What differs between the runs by nature: what was paid (llm_stats, and the summary and report
# built from them; the ledger, which an offline run does not write) ...
VOLATILE = ("llm_stats/", "summary.json", "report.md", "report/", "ledger/")
# ... and timings and peak memory, in artifacts otherwise compared in full (lm-eval results, training logs).
TIMINGS = {"date", "wall_time_s", "train_loop_s", "wall_s", "peak_rss_mib", "job_peak_rss_mib", "peak_gpu_memory_mib",
           "job_peak_gpu_memory_mib"}
TIMED = ("_lm_eval.json", "training_log.json")


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIMINGS}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def snakemake(workdir, *configfiles):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "tests/micro/config.yaml", *configfiles]
    proc = subprocess.run(cmd, cwd=workdir, env=env, capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        logs = "\n".join(f"--- {p}\n{p.read_text()[-2000:]}" for p in (Path(workdir) / "logs").rglob("*.log")
                         if "Error" in p.read_text())
        raise AssertionError(f"snakemake failed:\n{proc.stderr[-4000:]}\n{logs[-6000:]}")
    return proc


def artifacts(run_dir: Path) -> dict[str, str]:
    """Relative path -> sha256 of every artifact of a run but the volatile ones (timings left out)."""
    digests = {}
    for p in sorted(run_dir.rglob("*")):
        rel = str(p.relative_to(run_dir))
        if not p.is_file() or any(v in rel for v in VOLATILE):
            continue
        data = p.read_bytes()
        if rel.endswith(TIMED):
            data = json.dumps(_untimed(json.loads(data)), sort_keys=True).encode()
        digests[rel] = hashlib.sha256(data).hexdigest()
    return digests


def test_demo_pays_each_unique_request_once_and_replays_offline_byte_for_byte(tmp_path):
    first = tmp_path / "run"
    first.mkdir()
    for name in SOURCES:
        (shutil.copytree if (ROOT / name).is_dir() else shutil.copy)(ROOT / name, first / name)
    # latency widens the window where jobs overlap; the config's model is listed for the preflight
    with TestServer(ServerConfig(latency_s=0.3, models=("oracle-1",))) as server:
        (first / "server.yaml").write_text(
            f"llm:\n  endpoints:\n    oracle: {{base_url: '{server.url}', max_concurrency: 16}}\n")
        snakemake(first, "server.yaml")
        log = [e for e in server.log() if e["path"] == "/v1/chat/completions"]
    paid = collections.Counter(e["key"] for e in log if e["outcome"] == "ok")
    unique = {e["key"] for e in log}
    print(f"demo -c2 against the test server: {sum(paid.values())} paid at the server, {len(unique)} unique requests")
    assert sum(paid.values()) == len(unique) and set(paid.values()) == {1}
    stats = [read_json(p, "llm_stats") for p in (first / "results" / "micro").rglob("llm_stats/*.json")]
    assert sum(s["paid"] for s in stats) == len(unique)

    # Rebuild from the cache alone: a fresh checkout, the cache copied, the network refused (the
    # server is gone: its URL, part of every request's key, refuses connections), llm.offline on.
    second = tmp_path / "replay"
    second.mkdir()
    for name in (*SOURCES, "server.yaml"):
        (shutil.copytree if (first / name).is_dir() else shutil.copy)(first / name, second / name)
    shutil.copytree(first / ".cache" / "llm", second / ".cache" / "llm",
                    ignore=shutil.ignore_patterns("claims", "live", "limits"))
    (second / "offline.yaml").write_text("llm:\n  offline: true\n")
    snakemake(second, "server.yaml", "offline.yaml")
    replay_stats = [read_json(p, "llm_stats") for p in (second / "results" / "micro").rglob("llm_stats/*.json")]
    assert len(replay_stats) == len(stats) and sum(s["paid"] for s in replay_stats) == 0
    assert not (second / ".cache" / "llm" / "claims").exists()      # offline: nothing claimed, nothing sent
    before, after = artifacts(first / "results" / "micro"), artifacts(second / "results" / "micro")
    assert len(before) > 30 and before.keys() == after.keys()
    assert [k for k in before if before[k] != after[k]] == []
