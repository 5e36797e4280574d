"""Training under several processes (gloo on CPU) and resuming after a kill -9."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from lionflow.student.builtin import build_tiny_student

TINY = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_length=256)
WORDS = "lion tiger cat dog bird fish wolf bear frog owl".split()
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("train")
    build_tiny_student(tmp / "tiny", seed=0, **TINY)
    with open(tmp / "data.jsonl", "w") as f:
        for i in range(64):
            w = WORDS[i % len(WORDS)]
            f.write(json.dumps({"id": f"q{i}", "instruction": f"Write '{w}' in uppercase letters.", "input": "",
                                "answer": w.upper(), "model": "t", "finish_reason": "stop"}) + "\n")
    return tmp


def launch(setup, out, cfg, processes=1, **popen):
    cmd = [str(BIN / "accelerate"), "launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", str(processes)]
    if processes > 1:
        cmd.append("--multi_gpu")  # with CPU mode in the script: real processes over gloo
    cmd += ["-m", "lionflow.student.train", "--init", str(setup / "tiny"), "--data", str(setup / "data.jsonl"),
            "--out", str(out), "--config-json", json.dumps(cfg)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc, timeout=300):
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def test_two_processes_share_the_effective_batch(setup):
    cfg = dict(epochs=2, learning_rate=1e-3, effective_batch_size=16, per_device_batch_size=4)
    out = finish(launch(setup, setup / "two", cfg, processes=2))
    log = json.loads((setup / "two" / "training_log.json").read_text())
    assert log["num_processes"] == 2 and log["grad_accum"] == 2  # 16 = 4 per device x 2 processes x 2
    assert log["optimizer_steps"] == 2 * 4  # 64 examples / 16 per optimizer step, 2 epochs
    assert out.count("optimizer steps (batch 4 x 2 proc x 2 accum)") == 2  # both ranks ran the loop


def test_killed_training_resumes_where_it_stopped(setup):
    cfg = dict(epochs=6, learning_rate=1e-3, effective_batch_size=8, per_device_batch_size=4,
               checkpoint_every_steps=5, log_every=1)
    finish(launch(setup, setup / "whole", cfg))
    whole = json.loads((setup / "whole" / "training_log.json").read_text())
    assert whole["optimizer_steps"] == 6 * 8 and whole["resumed_from_step"] is None

    state = setup / "killed.resume"
    proc = launch(setup, setup / "killed", cfg, start_new_session=True)
    deadline = time.time() + 240
    while not (state / "latest" / "progress.json").exists():  # wait for a first saved state
        assert proc.poll() is None and time.time() < deadline, "no training state was saved"
        time.sleep(0.05)
    saved_at = json.loads((state / "latest" / "progress.json").read_text())["step"]
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its training process, mid-run
    proc.communicate()
    assert not (setup / "killed" / "training_log.json").exists()

    resumed_at = json.loads((state / "latest" / "progress.json").read_text())["step"]
    assert resumed_at >= saved_at
    finish(launch(setup, setup / "killed", cfg))
    log = json.loads((setup / "killed" / "training_log.json").read_text())
    assert log["resumed_from_step"] == resumed_at
    assert log["optimizer_steps"] == whole["optimizer_steps"]
    # The resumed run replays exactly the remaining batches: the same losses as the uninterrupted run.
    tail = {s["step"]: s["loss"] for s in whole["steps"]}
    assert [s["step"] for s in log["steps"]] == list(range(resumed_at + 1, whole["optimizer_steps"] + 1))
    assert all(abs(s["loss"] - tail[s["step"]]) < 1e-4 for s in log["steps"])
    assert not state.exists()  # finished: the resumable state is cleaned up
