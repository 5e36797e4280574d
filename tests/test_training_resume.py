"""Training under several processes (gloo on CPU), resuming after a kill -9 (full fine-tuning and LoRA),
and the LoRA checkpoint: the merged model, with its adapter beside it."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from lionflow.student.builtin import build_tiny_student

from conftest import train_settings

TINY = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_positions=256)
WORDS = "lion tiger cat dog bird fish wolf bear frog owl".split()
# student.train.lora as the validated config hands it over (every key; enabled turns it on)
LORA = dict(enabled=True, r=8, alpha=16, dropout=0.0, target_modules="all-linear", load_in_4bit=False)
BIN = Path(sys.executable).parent


pytestmark = pytest.mark.slow  # multi-process training, kill -9 and resume


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


def launch(setup, out, cfg, processes=1, log_every=1, **popen):
    """`setup`: the module's folder (tiny/ and data.jsonl in it), or {"init": model dir, "data": JSONL}."""
    init, data = (setup["init"], setup["data"]) if isinstance(setup, dict) else (setup / "tiny", setup / "data.jsonl")
    cmd = [str(BIN / "accelerate"), "launch", "--num_machines", "1", "--mixed_precision", "no",
           "--dynamo_backend", "no", "--num_processes", str(processes)]
    if processes > 1:
        cmd.append("--multi_gpu")  # with CPU mode in the script: real processes over gloo
    cmd += ["-m", "lionflow.student.train", "--init", str(init), "--data", str(data),
            "--out", str(out), "--config-json", json.dumps(train_settings(**cfg)), "--log-every", str(log_every)]
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


@pytest.mark.parametrize("lora", [None, LORA], ids=["full", "lora"])
def test_killed_training_resumes_where_it_stopped(setup, lora):
    cfg = dict(epochs=6, learning_rate=1e-3, effective_batch_size=8, per_device_batch_size=4,
               checkpoint_every_steps=5, lora=lora)
    method = "lora" if lora else "full"
    finish(launch(setup, setup / f"whole-{method}", cfg))
    whole = json.loads((setup / f"whole-{method}" / "training_log.json").read_text())
    assert whole["optimizer_steps"] == 6 * 8 and whole["resumed_from_step"] is None
    assert whole["method"] == method

    killed = setup / f"killed-{method}"
    state = setup / f"killed-{method}.resume"
    proc = launch(setup, killed, cfg, start_new_session=True)
    deadline = time.time() + 240
    while not (state / "latest" / "progress.json").exists():  # wait for a first saved state
        assert proc.poll() is None and time.time() < deadline, "no training state was saved"
        time.sleep(0.05)
    saved_at = json.loads((state / "latest" / "progress.json").read_text())["step"]
    os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its training process, mid-run
    proc.communicate()
    assert not (killed / "training_log.json").exists()

    resumed_at = json.loads((state / "latest" / "progress.json").read_text())["step"]
    assert resumed_at >= saved_at
    finish(launch(setup, killed, cfg))
    log = json.loads((killed / "training_log.json").read_text())
    assert log["resumed_from_step"] == resumed_at
    assert log["optimizer_steps"] == whole["optimizer_steps"]
    # The resumed run replays exactly the remaining batches: the same losses as the uninterrupted run.
    tail = {s["step"]: s["loss"] for s in whole["steps"]}
    assert [s["step"] for s in log["steps"]] == list(range(resumed_at + 1, whole["optimizer_steps"] + 1))
    assert all(abs(s["loss"] - tail[s["step"]]) < 1e-4 for s in log["steps"])
    assert not state.exists()  # finished: the resumable state is cleaned up
    # ... and ends with the same weights (LoRA: the same adapter and the same merged model)
    from safetensors.torch import load_file
    names = ["model.safetensors"] + (["adapter/adapter_model.safetensors"] if lora else [])
    for name in names:
        a, b = load_file(setup / f"whole-{method}" / name), load_file(killed / name)
        assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-5) for k in a), name


def _logits(model, ids):
    with torch.no_grad():
        return model(input_ids=ids).logits


def test_lora_checkpoint_is_the_merged_model_with_its_adapter(setup):
    """Only the adapters train (fewer parameters); the checkpoint is the base with the adapter merged in:
    it loads with AutoModelForCausalLM and answers as base + adapter does; frozen weights are unchanged."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    cfg = dict(epochs=2, learning_rate=1e-2, effective_batch_size=8, per_device_batch_size=8, lora=LORA)
    finish(launch(setup, setup / "lora", cfg))
    finish(launch(setup, setup / "full", {**cfg, "lora": None}))
    lora_log = json.loads((setup / "lora" / "training_log.json").read_text())
    full_log = json.loads((setup / "full" / "training_log.json").read_text())
    assert lora_log["method"] == "lora" and full_log["method"] == "full"
    assert full_log["trainable_parameters"] == full_log["total_parameters"]
    # the adapters are extra parameters: r x (in + out) for every linear layer of each block
    assert lora_log["total_parameters"] == full_log["total_parameters"] + lora_log["trainable_parameters"]
    assert 0 < lora_log["trainable_parameters"] < full_log["trainable_parameters"] / 5
    assert 100 < lora_log["peak_rss_mib"] <= lora_log["job_peak_rss_mib"] and lora_log["peak_gpu_memory_mib"] is None
    assert not (setup / "full" / "adapter").exists()

    ids = torch.tensor([[5, 80, 90, 100, 110, 120]])
    base = AutoModelForCausalLM.from_pretrained(setup / "tiny")
    merged = AutoModelForCausalLM.from_pretrained(setup / "lora")
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(setup / "tiny"),
                                             setup / "lora" / "adapter")
    assert torch.allclose(_logits(merged, ids), _logits(with_adapter, ids), atol=1e-4)
    assert not torch.allclose(_logits(merged, ids), _logits(base, ids), atol=1e-3)  # it learned something
    b, m = base.state_dict(), merged.state_dict()
    assert b.keys() == m.keys()
    assert torch.equal(b["model.embed_tokens.weight"], m["model.embed_tokens.weight"])  # frozen, not adapted
    assert not torch.equal(b["model.layers.0.self_attn.q_proj.weight"], m["model.layers.0.self_attn.q_proj.weight"])


def test_4bit_on_the_cpu_is_an_error_naming_the_key(setup, tmp_path):
    from lionflow.student.train import TrainConfig, train

    examples = [json.loads(line) for line in (setup / "data.jsonl").read_text().splitlines()]
    with pytest.raises(ValueError, match=r"student\.train\.lora\.load_in_4bit: 4-bit loading needs a GPU"):
        train(setup / "tiny", examples, tmp_path / "out", TrainConfig(**train_settings(lora={**LORA, "load_in_4bit": True})),
              device="cpu")
    assert not (tmp_path / "out").exists()


def test_lora_on_the_real_pretrained_student(tmp_path):
    """SmolLM2-135M-Instruct (the GGUF `make smollm2` fetches): LoRA trains a small share of its 134.5M
    parameters, the merged checkpoint loads, and the next iteration (student.init: previous) continues
    from it: its first loss is below the first round's."""
    from transformers import AutoModelForCausalLM

    from lionflow.student.builtin import resolve_base_model

    gguf = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert gguf.is_file(), "make smollm2 (make test does) fetches it"
    resolve_base_model(str(gguf), tmp_path / "base", seed=0, chat_template="auto")
    with open(tmp_path / "data.jsonl", "w") as f:
        for i in range(16):
            w = WORDS[i % len(WORDS)]
            f.write(json.dumps({"id": f"q{i}", "instruction": f"Write '{w}' in uppercase letters.", "input": "",
                                "answer": w.upper(), "model": "t", "finish_reason": "stop"}) + "\n")
    cfg = dict(epochs=1, learning_rate=2e-3, max_length=64, effective_batch_size=4, per_device_batch_size=4,
               lora={**LORA, "target_modules": ["q_proj", "v_proj"]})
    logs = []
    for name, init in (("iter1", tmp_path / "base"), ("iter2", tmp_path / "iter1")):
        finish(launch({"init": init, "data": tmp_path / "data.jsonl"}, tmp_path / name, cfg), timeout=600)
        logs.append(json.loads((tmp_path / name / "training_log.json").read_text()))
        assert (tmp_path / name / "adapter" / "adapter_model.safetensors").is_file()
    first = logs[0]
    assert first["total_parameters"] - first["trainable_parameters"] == 134_515_008  # SmolLM2-135M, frozen
    # q_proj and v_proj of 30 layers, rank 8: 8 x (576 + 576) + 8 x (576 + 192)
    assert first["trainable_parameters"] == 30 * (8 * (576 + 576) + 8 * (576 + 192))
    assert logs[1]["steps"][0]["loss"] < first["steps"][0]["loss"]
    model = AutoModelForCausalLM.from_pretrained(tmp_path / "iter2")
    assert model.num_parameters() == 134_515_008 and not any("lora" in k for k in model.state_dict())
