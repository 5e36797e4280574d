"""The response cache at paper scale: job start-up time, peak memory and lookup rate with N cached
answers (issue 11; goal at 1M: start-up <= 2 s, peak RSS <= 300 MiB).

A directory of part files is written as lionflow writes them (one JSON line per answer, the
answer text drawn from 200-1,500 characters, as teacher answers run), spread over `--parts` files
(one per process that paid). Each measurement runs in a fresh subprocess, so its peak RSS is
its own: a job opening the cache and answering its first lookup (start-up), then `--lookups`
random hits and as many misses. The writers are gone, so the first job scans the parts and saves
their indexes (`index/*.idx`), and every later job loads those: both are measured.

Usage: python benchmarks/cache_scale.py [--entries 1000000] [--parts 16] [--lookups 100000]
       python benchmarks/cache_scale.py --smoke    # tiny sizes, the same stages and JSON keys
The last line printed is one JSON object with the figures, also when a stage fails (benchmarks/stages.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages import Stages

run = Stages("cache_scale")
WORDS = ("the answer is step first then we add multiply because so result value list sort each "
         "number word sentence code function return").split()


def write_parts(directory: Path, entries: int, parts: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    keys = []
    files = [open(directory / f"part-benchhost-{1000 + p}-{p:08x}.jsonl", "w") for p in range(parts)]
    try:
        for i in range(entries):
            key = hashlib.sha256(str(i).encode()).hexdigest()
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 300)))
            entry = {"key": key, "model": "gpt-4o-mini", "content": text, "finish_reason": "stop",
                     "usage": {"prompt_tokens": rng.randint(20, 400), "completion_tokens": len(text) // 4},
                     "served_model": "gpt-4o-mini-2024-07-18", "system_fingerprint": "fp_0ba0d124f1",
                     "created": 1.7e9 + i}
            files[i % parts].write(json.dumps(entry, ensure_ascii=False) + "\n")
            keys.append(key)
    finally:
        for f in files:
            f.close()
    return keys


def measure(directory: str, lookups: int, entries: int) -> dict:
    """In this (fresh) process: start-up, then lookups; peak RSS."""
    from lionflow.llm import ResponseCache

    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    cache = ResponseCache(directory)
    first = cache.get(hashlib.sha256(b"0").hexdigest())
    startup_s = time.perf_counter() - t0
    assert first is not None and len(cache) == entries, (first, len(cache))
    rng = random.Random(1)
    hits = [hashlib.sha256(str(rng.randrange(entries)).encode()).hexdigest() for _ in range(lookups)]
    misses = [hashlib.sha256(f"miss{i}".encode()).hexdigest() for i in range(lookups)]
    t0 = time.perf_counter()
    assert all(cache.get(k) is not None for k in hits)
    hit_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    assert all(cache.get(k) is None for k in misses)
    miss_s = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"startup_s": round(startup_s, 3), "peak_rss_mib": round(peak / 1024, 1),
            "rss_before_mib": round(rss0 / 1024, 1), "hits_per_s": round(lookups / hit_s),
            "misses_per_s": round(lookups / miss_s)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--entries", type=int, default=1_000_000)
    ap.add_argument("--parts", type=int, default=16)
    ap.add_argument("--lookups", type=int, default=100_000)
    args = run.parse(ap, smoke=dict(entries=2000, parts=2, lookups=1000))
    with tempfile.TemporaryDirectory(prefix="lionflow-cache-") as d:
        run.stage("write_parts")
        t0 = time.perf_counter()
        write_parts(Path(d), args.entries, args.parts)
        size = sum(p.stat().st_size for p in Path(d).iterdir())
        print(f"wrote {args.entries:,} answers in {args.parts} part files, {size / 2**20:,.0f} MiB, "
              f"in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        run.figures |= {"entries": args.entries, "parts": args.parts, "cache_mib": round(size / 2**20)}
        for job in ("first_job", "later_job"):
            run.stage(job)
            out = subprocess.run([sys.executable, __file__, "--measure", d, "--entries", str(args.entries),
                                  "--lookups", str(args.lookups)], capture_output=True, text=True, check=True,
                                 env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "src")})
            run.figures[job] = f = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{job}: start-up {f['startup_s']} s, peak RSS {f['peak_rss_mib']} MiB (of which interpreter and "
                  f"imports {f['rss_before_mib']} MiB), {f['hits_per_s']:,} hits/s, {f['misses_per_s']:,} misses/s",
                  file=sys.stderr)


if __name__ == "__main__":
    if "--measure" in sys.argv:  # internal: one job in its own process, its figures as JSON
        ap = argparse.ArgumentParser()
        for name in ("--measure", "--entries", "--lookups"):
            ap.add_argument(name, type=str if name == "--measure" else int)
        a, _ = ap.parse_known_args()
        print(json.dumps(measure(a.measure, a.lookups, a.entries)))
    else:
        run.main(main)
