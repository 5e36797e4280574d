"""FSDP2 executed in CI: the training rule's sharded path (lionflow.student.sharding) on 2 CPU processes over
gloo, the code the GPU jobs run.

- On SmolLM2-135M's architecture (random weights, 2 of its 30 decoder layers: the embedding, 28M of the
  35M parameters, is sharded by the root): every parameter is a DTensor of which each process holds
  half the rows; parameters + gradients + AdamW state per process are half of one process's; the
  loss curve matches one process's on the same data and effective batch within PARITY_TOL.
- On a tiny LLaMA: a kill -9 of the whole launcher tree mid-run, then a rerun, ends with the
  uninterrupted run's weights; the state saved by 2 processes resumes with 1, and 1's with 2.
- LoRA composes with FSDP2 (the adapters are sharded with their layers).

Every example has the same prompt and answer length (4-letter words, byte tokenizer), so a micro-batch's
mean token loss is the mean of its examples' whatever the grouping: one process and two see the same
gradient, and what differs is floating-point summation order.
"""
import json
import shutil
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lionflow.student.builtin import build_tiny_student

from gpu_check import SMOLLM2_135M, build_student, kill_tree  # the GPU check's model and kill -9 of a launch tree
from test_training_resume import LORA, finish, launch

pytestmark = pytest.mark.slow

PARITY_TOL = 1e-4  # max |loss, 1 process - loss, 2 processes (FSDP2)| per optimizer step; weights: max |diff|
WORDS4 = "lion wolf bear frog bird fish duck goat crab deer".split()
TINY = dict(hidden_size=64, num_layers=2, num_heads=2, intermediate_size=128, max_positions=256)


def write_data(path: Path, n: int) -> Path:
    with open(path, "w") as f:
        for i in range(n):
            w = WORDS4[i % len(WORDS4)]
            f.write(json.dumps({"id": f"q{i}", "instruction": f"Write '{w}' in uppercase letters.", "input": "",
                                "answer": w.upper(), "model": "t", "finish_reason": "stop"}) + "\n")
    return path


def training_log(out: Path) -> dict:
    return json.loads((out / "training_log.json").read_text())


def max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def max_loss_diff(a: dict, b: dict) -> float:
    ref = {s["step"]: s["loss"] for s in a["steps"]}
    assert all(s["step"] in ref for s in b["steps"])
    return max(abs(s["loss"] - ref[s["step"]]) for s in b["steps"])


def kill_after_first_state(proc, state: Path) -> int:
    """Wait for the first saved state, then SIGKILL the launcher and every process under it (torchrun's workers
    run in sessions of their own); the saved step."""
    deadline = time.time() + 240
    while not (state / "latest" / "progress.json").exists():
        assert proc.poll() is None and time.time() < deadline, "no training state was saved"
        time.sleep(0.02)
    killed = kill_tree(proc)
    assert killed >= 2
    return json.loads((state / "latest" / "progress.json").read_text())["step"]


# ---- sharding, memory and parity on SmolLM2-135M's architecture ----

@pytest.fixture(scope="module")
def smollm2_runs(tmp_path_factory):
    """The same training by one process (no sharding) and by two (FSDP2): their training logs and folders."""
    tmp = tmp_path_factory.mktemp("smollm2-arch")
    build_student(tmp / "init", {**SMOLLM2_135M, "num_hidden_layers": 2}, seq_len=256)
    run = {"init": tmp / "init", "data": write_data(tmp / "data.jsonl", 32)}
    cfg = dict(epochs=1, learning_rate=1e-3, warmup_ratio=0.0, max_length=256, effective_batch_size=8,
               per_device_batch_size=2, checkpoint_every_steps=0)
    procs = {n: launch(run, tmp / f"p{n}", cfg, processes=n) for n in (1, 2)}  # side by side
    for p in procs.values():
        finish(p)
    return {n: training_log(tmp / f"p{n}") for n in (1, 2)} | {"dir": tmp}


def test_every_parameter_is_a_dtensor_holding_half_the_rows(smollm2_runs):
    one, two = smollm2_runs[1]["sharding"], smollm2_runs[2]["sharding"]
    assert one == {"method": "none", "processes": 1}
    assert two["method"] == "fsdp2" and two["processes"] == 2 and two["layer_classes"] == ["LlamaDecoderLayer"]
    assert two["sharded_modules"] == 2 + 1  # each decoder layer and the root
    assert two["placements"] == ["(Shard(dim=0),)"] and two["mixed_precision"] == "fp32"
    for rank in two["ranks"]:
        assert rank["dtensor_parameters"] == two["parameters"]
        assert 0.49 <= rank["rows_fraction"][0] <= rank["rows_fraction"][1] <= 0.51
        assert 0.49 <= rank["local_numel"] / two["total_numel"] <= 0.51
    assert sum(r["local_numel"] for r in two["ranks"]) == two["total_numel"] == smollm2_runs[1]["total_parameters"]


def test_parameters_gradients_and_optimizer_state_per_process_halve(smollm2_runs):
    one, two = smollm2_runs[1]["state_memory"], smollm2_runs[2]["state_memory"]
    (whole,) = one["per_rank"]
    assert whole["total_mib"] > 500  # 35M float32 parameters x (weights, gradients, 2 AdamW moments)
    for rank in two["per_rank"]:
        for k in ("parameters_mib", "gradients_mib", "optimizer_mib", "total_mib"):
            assert 0.48 <= rank[k] / whole[k] <= 0.52, (k, rank, whole)
    print(f"\nper-process MiB, 1 process: {whole}; 2 processes (FSDP2): {two['per_rank']}; peak RSS of process 0: "
          f"{smollm2_runs[1]['peak_rss_mib']} vs {smollm2_runs[2]['peak_rss_mib']} MiB")


def test_loss_curve_matches_one_process(smollm2_runs):
    one, two = smollm2_runs[1], smollm2_runs[2]
    assert one["optimizer_steps"] == two["optimizer_steps"] == 4 and (one["grad_accum"], two["grad_accum"]) == (4, 2)
    assert one["truncated"] == 0
    loss_diff = max_loss_diff(one, two)
    weight_diff = max_weight_diff(smollm2_runs["dir"] / "p1", smollm2_runs["dir"] / "p2")
    print(f"\nmax |loss difference| per step {loss_diff:.2e}, max |weight difference| {weight_diff:.2e}")
    assert loss_diff <= PARITY_TOL and weight_diff <= PARITY_TOL
    assert two["steps"][-1]["loss"] < two["steps"][0]["loss"]


# ---- kill -9 and resume, with the same and with another process count (tiny LLaMA) ----

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fsdp2-tiny")
    build_tiny_student(tmp / "tiny", seed=0, **TINY)
    return {"init": tmp / "tiny", "data": write_data(tmp / "data.jsonl", 64), "dir": tmp}


RESUME_CFG = dict(epochs=4, learning_rate=1e-3, effective_batch_size=16, per_device_batch_size=4,
                  checkpoint_every_steps=4)


@pytest.fixture(scope="module")
def uninterrupted(tiny):
    finish(launch(tiny, tiny["dir"] / "whole", RESUME_CFG, processes=2))
    log = training_log(tiny["dir"] / "whole")
    assert log["optimizer_steps"] == 16 and log["sharding"]["method"] == "fsdp2"
    return log


def test_killed_sharded_training_resumes_with_the_same_weights_on_2_or_1_processes(tiny, uninterrupted):
    d = tiny["dir"]
    saved = kill_after_first_state(launch(tiny, d / "killed", RESUME_CFG, processes=2, start_new_session=True),
                                   d / "killed.resume")
    assert not (d / "killed").exists()  # no checkpoint: Snakemake reruns the job
    shards = sorted(p.name for p in (d / "killed.resume" / "latest").iterdir())
    assert ".metadata" in shards and "__0_0.distcp" in shards and "__1_0.distcp" in shards  # each process's shards
    shutil.copytree(d / "killed.resume", d / "on-one.resume")

    # side by side: the same 2 processes, and 1 process resharding the 2 processes' state
    resumed = [launch(tiny, d / "killed", RESUME_CFG, processes=2), launch(tiny, d / "on-one", RESUME_CFG, processes=1)]
    for p in resumed:
        finish(p)
    same = training_log(d / "killed")
    assert same["resumed_from_step"] == saved and same["optimizer_steps"] == 16
    assert [s["step"] for s in same["steps"]] == list(range(saved + 1, 17))
    assert max_loss_diff(uninterrupted, same) < 1e-6
    assert max_weight_diff(d / "whole", d / "killed") < 1e-6
    assert not (d / "killed.resume").exists()

    one = training_log(d / "on-one")
    print(f"\nkilled at a state of step {saved}; resumed on 2: max |loss diff| {max_loss_diff(uninterrupted, same):.1e}, "
          f"|weight diff| {max_weight_diff(d / 'whole', d / 'killed'):.1e}; on 1: {max_loss_diff(uninterrupted, one):.1e}, "
          f"{max_weight_diff(d / 'whole', d / 'on-one'):.1e}")
    assert one["resumed_from_step"] == saved and one["optimizer_steps"] == 16 and one["sharding"]["method"] == "none"
    assert max_loss_diff(uninterrupted, one) <= PARITY_TOL and max_weight_diff(d / "whole", d / "on-one") <= PARITY_TOL


def test_one_process_state_resumes_on_two(tiny, uninterrupted):
    d = tiny["dir"]
    saved = kill_after_first_state(launch(tiny, d / "from-one", RESUME_CFG, processes=1, start_new_session=True),
                                   d / "from-one.resume")
    finish(launch(tiny, d / "from-one", RESUME_CFG, processes=2))
    log = training_log(d / "from-one")
    print(f"\n1 process killed at a state of step {saved}, resumed on 2: max |loss diff| "
          f"{max_loss_diff(uninterrupted, log):.1e}, |weight diff| {max_weight_diff(d / 'whole', d / 'from-one'):.1e}")
    assert log["resumed_from_step"] == saved and log["optimizer_steps"] == 16 and log["sharding"]["method"] == "fsdp2"
    assert max_loss_diff(uninterrupted, log) <= PARITY_TOL and max_weight_diff(d / "whole", d / "from-one") <= PARITY_TOL


def test_lora_composes_with_fsdp2(tiny):
    """The adapters are sharded with their layers; losses as one process's; the checkpoint is the merged model."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    d, cfg = tiny["dir"], dict(epochs=1, learning_rate=1e-2, effective_batch_size=16, per_device_batch_size=4,
                               lora=LORA)
    procs = {n: launch(tiny, d / f"lora{n}", cfg, processes=n) for n in (1, 2)}
    for p in procs.values():
        finish(p)
    one, two = training_log(d / "lora1"), training_log(d / "lora2")
    assert two["method"] == "lora" and two["sharding"]["method"] == "fsdp2"
    assert all(r["dtensor_parameters"] == two["sharding"]["parameters"] for r in two["sharding"]["ranks"])
    assert two["trainable_parameters"] == one["trainable_parameters"] and max_loss_diff(one, two) <= PARITY_TOL
    ids = torch.tensor([[5, 80, 90, 100, 110, 120]])
    merged = AutoModelForCausalLM.from_pretrained(d / "lora2")
    with_adapter = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny["init"]), d / "lora2" / "adapter")
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=ids).logits, with_adapter(input_ids=ids).logits, atol=1e-4)


def test_a_state_of_another_format_says_how_to_resume(tiny, tmp_path):
    """A resumable state written by accelerate's save_state (lionflow before FSDP2) is refused, naming the way out."""
    from lionflow.artifacts import read_jsonl
    from lionflow.student.train import TrainConfig, train

    from conftest import train_settings

    state = tmp_path / "out.resume"
    (state / "latest").mkdir(parents=True)
    (state / "latest" / "progress.json").write_text('{"step": 4, "epoch": 0, "micro": 4}')
    (state / "latest" / "model.safetensors").write_text("")
    with pytest.raises(RuntimeError, match=r"holds no torch.distributed.checkpoint state .*: delete .*out.resume to "
                                           r"train from the start"):
        train(tiny["init"], read_jsonl(tiny["data"], "answer"), tmp_path / "out",
              TrainConfig(**train_settings(**RESUME_CFG)), state_dir=state, device="cpu")
    assert not (tmp_path / "out").exists()


def test_fsdp_false_trains_replicated_with_ddp(tiny):
    """student.train.fsdp: false - every process holds the whole model (DDP), and its losses are still 1 process's."""
    d, cfg = tiny["dir"], dict(epochs=1, learning_rate=1e-3, effective_batch_size=16, per_device_batch_size=4)
    procs = {n: launch(tiny, d / f"ddp{n}", {**cfg, "fsdp": False}, processes=n) for n in (1, 2)}
    for p in procs.values():
        finish(p)
    one, two = training_log(d / "ddp1"), training_log(d / "ddp2")
    assert two["sharding"] == {"method": "ddp", "processes": 2}
    whole = one["state_memory"]["per_rank"][0]
    assert [r["total_mib"] for r in two["state_memory"]["per_rank"]] == [whole["total_mib"]] * 2
    assert max_loss_diff(one, two) <= PARITY_TOL
