"""What a benchmark measured, stage by stage: its last stdout line is one JSON object, also when it fails.

    from stages import Stages

    run = Stages("scale")

    def main():
        args = run.parse(ap, smoke={"pool": 2000, ...})  # adds --smoke: these sizes, the same stages and keys
        run.stage("dedup")                               # a stage begins (the one before ends)
        run.figures |= bench_dedup(...)                  # what it measured
        run.stage("generation")
        ...

    if __name__ == "__main__":
        run.main(main)

`run.main` prints the JSON line: the figures, `benchmark`, `smoke`, `stages_s` (seconds per stage, the
failed one included), `failed_stage` (null when all passed) and `error`. When a stage raises (or exits
non-zero, or SIGTERM ends it), the figures of the stages before it (and what the failed one had put
into `figures`) are still printed, the error and its traceback go to stderr naming the stage, and the
process exits 1. Under torchrun/accelerate only rank 0 prints the line.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
import traceback


def _terminated(signum, frame):
    raise KeyboardInterrupt(f"terminated by signal {signum}")


class Stages:
    def __init__(self, benchmark: str):
        self.figures: dict = {}
        self.benchmark = benchmark
        self.smoke = False
        self.stages_s: dict[str, float] = {}
        self.current: str | None = None
        self._t0 = 0.0

    def parse(self, ap: argparse.ArgumentParser, smoke: dict, argv=None) -> argparse.Namespace:
        """Parse the command line with a `--smoke` flag that makes `smoke`'s options the defaults (tiny sizes,
        seconds); an option given on the command line wins."""
        sizes = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in smoke.items())
        ap.add_argument("--smoke", action="store_true",
                        help=f"tiny sizes, seconds: the same stages and JSON keys ({sizes}); tests/test_benchmarks.py")
        if ap.parse_known_args(argv)[0].smoke:
            ap.set_defaults(**smoke)
        args = ap.parse_args(argv)
        self.smoke = args.smoke
        return args

    def stage(self, name: str) -> None:
        """Stage `name` begins; the one before it ends."""
        self._end()
        self.current, self._t0 = name, time.perf_counter()
        print(f"[{self.benchmark}] stage {name} ...", file=sys.stderr, flush=True)

    def _end(self) -> None:
        if self.current is not None:
            self.stages_s[self.current] = round(time.perf_counter() - self._t0, 2)

    def result(self, failed_stage: str | None = None, error: str | None = None) -> dict:
        return {**self.figures, "benchmark": self.benchmark, "smoke": self.smoke, "stages_s": self.stages_s,
                "failed_stage": failed_stage, "error": error}

    def main(self, fn) -> None:
        """Run fn() (a returned dict joins the figures), print the JSON line, exit 1 naming the failed stage."""
        failed = error = None
        signal.signal(signal.SIGTERM, _terminated)  # a timeout's kill: still print what was measured
        try:
            out = fn()
            if isinstance(out, dict):
                self.figures |= out
        except (Exception, KeyboardInterrupt, SystemExit) as e:
            if isinstance(e, SystemExit) and e.code in (None, 0):
                pass
            else:
                failed = self.current or "setup"
                error = str(e.code) if isinstance(e, SystemExit) else f"{type(e).__name__}: {e}"
                detail = ""
                if isinstance(e, subprocess.CalledProcessError):  # what the command said, not just its exit status
                    for name, text in (("stdout", e.stdout), ("stderr", e.stderr)):
                        if isinstance(text, bytes):
                            text = text.decode(errors="replace")
                        if text and text.strip():
                            detail += f"\n--- its {name}, last 3000 characters:\n{text[-3000:]}"
                print(f"{traceback.format_exc()}{detail}\n[{self.benchmark}] FAILED in stage {failed!r}: {error}",
                      file=sys.stderr, flush=True)
        self._end()
        if int(os.environ.get("RANK", "0")) == 0:
            sys.stdout.flush()
            print(json.dumps(self.result(failed, error), default=str), flush=True)
        sys.exit(1 if failed else 0)
