"""The micro demo through `snakemake --profile profiles/slurm` on a real single-node SLURM cluster.

CI brings the cluster up with tests/slurm/cluster.sh (Debian's slurmctld, slurmd, slurmdbd with
MariaDB, munge) and exports SLURM_CONF; without a cluster this test cannot run and says so: it
skips on a workstation and fails in CI (CI set, as .ci/run sets it), where the cluster must be up.
"""

import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from lionflow.artifacts import read_json

from conftest import ROOT

pytestmark = pytest.mark.slow

# Rules that must run as SLURM jobs, at least (bookkeeping rules and `all` are local rules).
CLUSTER_RULES = {"answer_with_teacher", "build_base_student", "train_student", "answer_with_student",
                 "referee_answers", "generate_instructions", "evaluate_student"}
GPU_RULES = ("train_student", "answer_with_student", "evaluate_student", "answer_questions_with_student")


def cluster_available() -> bool:
    return bool(os.environ.get("SLURM_CONF")) and shutil.which("sbatch") is not None and subprocess.run(
        ["sinfo", "-h"], capture_output=True).returncode == 0


NO_CLUSTER = "no SLURM cluster: run `tests/slurm/cluster.sh up` and export SLURM_CONF (CI does)"


@pytest.mark.skipif(not cluster_available() and not os.environ.get("CI"), reason=NO_CLUSTER)
def test_micro_demo_runs_as_slurm_jobs_and_a_failed_job_is_retried(tmp_path):
    assert cluster_available(), f"CI is set and there is {NO_CLUSTER}"
    wd = tmp_path / "wd"
    wd.mkdir()
    for name in ("Snakefile", "rules", "workflow", "config", "resources", "tests", "profiles"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, wd / name)
    # Make the student's answering job fail on its first attempt only (the profile retries once).
    script = wd / "workflow" / "scripts" / "answer_with_student.py"
    script.write_text("import pathlib\nif not pathlib.Path('fail-once.marker').exists():\n"
                      "    pathlib.Path('fail-once.marker').touch()\n"
                      "    raise SystemExit('injected failure: first attempt')\n" + script.read_text())
    (wd / "slurm-test.yaml").write_text("iterations: 1\n")

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "HF_HUB_OFFLINE": "1",
           "LIONFLOW_SLURM_ACCOUNT": "root", "LIONFLOW_SLURM_CPU_PARTITION": "debug",
           "LIONFLOW_SLURM_GPU_PARTITION": "debug"}
    # Test override: this node has 2 CPUs, ~20 GB and no GPU.
    small = "mem_mb=1500 cpus_per_task=1 gpu=0 runtime=30"
    cmd = [sys.executable, "-m", "snakemake", "--profile", "profiles/slurm",
           "--configfile", "tests/micro/config.yaml", "slurm-test.yaml",
           "--default-resources", "slurm_account=root", "slurm_partition=debug", *small.split(),
           "--set-resources", *[f"{rule}:{kv}" for rule in GPU_RULES for kv in small.split()],
           "--set-threads", *[f"{rule}=1" for rule in GPU_RULES],
           "--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "2"]
    proc = subprocess.run(cmd, cwd=wd, env=env, capture_output=True, text=True, timeout=1500)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-6000:]

    # Every cluster rule's jobs were submitted to SLURM and ran there.
    submitted = set(re.findall(r"has been submitted with SLURM jobid (\d+)", output))
    accounting = subprocess.run(["sacct", "-X", "-n", "-P", "-S", "now-1hour", "-o", "JobID,Comment,State"],
                                env=env, capture_output=True, text=True, check=True).stdout
    jobs = [line.split("|") for line in accounting.splitlines() if "|rule_" in line]
    ours = [(jid, comment.split("_wildcards_")[0].removeprefix("rule_"), state) for jid, comment, state in jobs
            if jid in submitted]
    assert len(ours) == len(submitted) >= len(CLUSTER_RULES)
    # Snakemake prints "rule X:" for a job it submits and "localrule X:" for one it runs itself.
    non_local = set(re.findall(r"^rule (\w+):", output, re.MULTILINE))
    assert {rule for _, rule, _ in ours} == non_local and CLUSTER_RULES <= non_local
    states = Counter((rule, state) for _, rule, state in ours)
    assert states[("answer_with_student", "FAILED")] == 1 and states[("answer_with_student", "COMPLETED")] == 1
    assert all(state == "COMPLETED" for _, rule, state in ours if rule != "answer_with_student")
    assert "Error in rule answer_with_student" in output  # the failure is reported, then retried
    summary = read_json(wd / "results" / "micro" / "summary.json", "summary")
    assert len(summary["iterations"]) == 1 and summary["final_eval"]
