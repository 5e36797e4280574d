"""benchmarks/gpu_check.sh, the prepared check for a lent GPU machine, kept runnable: its CPU smoke
(tiny sizes, two training processes over gloo) runs every phase here; and its wheel list still
matches requirements.lock."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"


@pytest.mark.slow
def test_gpu_check_smoke_runs_every_phase(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(SCRIPT), "--smoke", "--work", str(tmp_path / "work")], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=900)
    assert proc.stdout.strip(), proc.stderr[-4000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])  # one JSON line, the last
    assert proc.returncode == 0 and result["ok"], (result.get("errors"), proc.stderr[-4000:])
    assert result["mode"] == "smoke" and not result["errors"]
    assert json.loads((tmp_path / "out" / "gpu_check.json").read_text()) == result

    train = result["train"]
    assert "-m lionflow.student.train" in train["launch"] and train["optimizer_steps"] > 0
    assert train["tokens_per_s"] > 0 and train["final_loss"] < train["first_loss"]
    assert "--config_file config/accelerate/gpus.yaml --num_processes 2" in train["launch"]  # the GPU rule's launch
    assert train["sharding"]["method"] == "fsdp2" and train["sharding"]["processes"] == 2
    resume = result["resume"]
    assert resume["ok"] and resume["resumed_from_step"] == resume["saved_step"] > 0
    assert resume["optimizer_steps"] == resume["expected_optimizer_steps"] == train["optimizer_steps"]
    assert resume["processes_killed"] >= 3  # the launcher (torchrun's agent) and both training processes
    assert resume["loss_max_abs_diff_vs_uninterrupted"] < 1e-4
    gen = result["generation"]
    assert gen["batched_answers_per_s"] > 0 and all(v > 0 for v in gen["one_at_a_time_answers_per_s"].values())
    assert gen["ratio_vs_fastest_one_at_a_time"] > 0 and gen["goal_ratio"] == 20.0
    lm = result["lm_eval"]
    assert lm["status"] == "ran" and set(lm["scores"]) == {"oracle_gen", "oracle_mc", "oracle"}
    for name in ("train_whole.log", "train_killed.log", "train_resumed.log", "lm_eval.json"):
        assert (tmp_path / "out" / name).is_file(), name


def test_gpu_check_wheels_are_pinned_by_the_lock():
    out = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, check=True).stdout.split()
    names = {line.split("==")[0].lower().replace("_", "-") for line in out}
    assert {"jsonschema", "fastjsonschema", "lm-eval", "datasets", "rouge-score"} <= names
    assert all("==" in line for line in out)
