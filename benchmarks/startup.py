"""Start-up of the workflow with a real base model: how long `snakemake -n` takes before it prints its
plan, for the main run and the experiment, and a cluster job's own start-up (the job parses the
Snakefile again, without the preflight: `--mode remote`, as the SLURM executor's jobs run it).

Runs in a temporary copy of the workflow (its own `.cache`, so the first parse is cold: it reads the
GGUF file once). Prints wall and CPU seconds (the median of --repeat runs for the warm cases); the
last line is a JSON object of the figures, also when a stage fails (`failed_stage`: benchmarks/stages.py).
Usage: python benchmarks/startup.py [--config config/smollm2.yaml] [--repeat 3] [--smoke]
  --smoke: the embedded default's config (no model file needed), one run of each.
"""

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages import Stages

ROOT = Path(__file__).resolve().parents[1]
run = Stages("startup")


def timed(workdir: Path, *args: str) -> tuple[float, float]:
    """(wall s, CPU s) of one snakemake command in workdir."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "snakemake", *args], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode:
        sys.exit(f"snakemake {' '.join(args)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="config/smollm2.yaml")
    parser.add_argument("--repeat", type=int, default=3)
    args = run.parse(parser, smoke=dict(config="config/config.yaml", repeat=1))
    configs = ["--configfile", args.config]
    repeat = args.repeat
    cases = {  # name -> snakemake arguments (a dry run each)
        "dry_run": [],
        "dry_run_experiment": ["-s", "experiment.smk"],
        "job_startup": ["--target-jobs", "train_student:k=1", "--allowed-rules", "train_student", "--mode", "remote"],
        "job_startup_experiment": ["-s", "experiment.smk", "--target-jobs", "uniform_s1_train_student:k=2",
                                   "--allowed-rules", "uniform_s1_train_student", "--mode", "remote"],
    }
    figures = run.figures
    figures |= {"config": configs[1], "cpus": os.cpu_count(), "load_1min": os.getloadavg()[0]}
    with tempfile.TemporaryDirectory() as tmp:
        run.stage("dry_run_cold")
        work = Path(tmp)
        for name in ("Snakefile", "experiment.smk", "rules", "workflow", "config", "resources"):
            src = ROOT / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, work / name)
        if (ROOT / "models").is_dir():
            (work / "models").symlink_to(ROOT / "models")
        wall, cpu = timed(work, "-n", "--cores", "2", *configs)
        figures["dry_run_cold_s"], figures["dry_run_cold_cpu_s"] = round(wall, 2), round(cpu, 2)
        print(f"{'dry_run (cold: the model read once)':40s} {wall:6.2f} s wall {cpu:6.2f} s CPU")
        for case, extra in cases.items():
            run.stage(case)
            runs = [timed(work, "-n", "--cores", "2", *extra, *configs) for _ in range(repeat)]
            wall, cpu = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
            figures[f"{case}_s"], figures[f"{case}_cpu_s"] = round(wall, 2), round(cpu, 2)
            print(f"{case:40s} {wall:6.2f} s wall {cpu:6.2f} s CPU (median of {repeat})")


if __name__ == "__main__":
    run.main(main)
