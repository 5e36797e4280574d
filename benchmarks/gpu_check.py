"""Every GPU path of lionflow in one run (issue 10, item 6); started by benchmarks/gpu_check.sh.

On one GPU, within about 8 minutes, with a student of SmolLM2-135M's architecture (LlamaConfig,
random weights: the checkpoint is too big to carry) and the project's byte-level tokenizer:

1. train: the training rule's own command (`python -m accelerate.commands.launch --config_file
   config/accelerate/gpus.yaml --num_processes <GPUs> -m lionflow.student.train ...`: one process per
   GPU, the student sharded with FSDP2 by lionflow.student.sharding, bf16 compute) on synthetic
   teacher answers, every sequence exactly `seq_len` tokens (no padding). tokens/s is the mean of
   the training log's tok/s windows (all processes) after the first (which holds the warm-up); MFU =
   6 x parameters x tokens/s / (GPUs x one GPU's dense bf16 peak) (benchmarks/train_throughput.py's
   table: 989e12 FLOP/s for the H100/H200, the datasheet figure without sparsity).
2. resume: the same training killed with SIGKILL (launcher and worker) once a state is saved,
   then relaunched: it must resume at the saved step and end with the uninterrupted run's
   optimizer steps; the largest loss difference per step against that run is reported.
3. generation: lionflow.student.generate batched (length-sorted, left-padded) against one
   prompt at a time (benchmarks/scale.py's `one_at_a_time`, both attention kernels, the faster
   one counts), greedy, on the untrained student so that every answer runs to max_new_tokens.
   Goal: batched >= 20x the answers/s.
4. lm-eval: lionflow.evaluation.run_lm_eval on the trained checkpoint, on the GPU, when lm-eval
   imports (its wheels travel in .gpu-wheels/); else reported as skipped with the reason.

Prints one JSON line (the last line of stdout) and writes it to $OUT/gpu_check.json with the
training logs when OUT is set. `--smoke` (or GPU_CHECK_SMOKE=1): tiny sizes on the CPU, the same
launch with two training processes over gloo (FSDP2 in float32), so the script is exercised by
tests/test_gpu_check.py on any machine.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

# SmolLM2-135M's architecture (its config.json), random weights.
SMOLLM2_135M = dict(hidden_size=576, num_hidden_layers=30, num_attention_heads=9, num_key_value_heads=3,
                    intermediate_size=1536, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                    max_position_embeddings=8192, rms_norm_eps=1e-5, hidden_act="silu")
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=512, tie_word_embeddings=True, rope_theta=100000.0,
            max_position_embeddings=512, rms_norm_eps=1e-5, hidden_act="silu")

SIZES = {
    # One H200: ~65K tokens per optimizer step; the whole check well inside 8 minutes.
    "gpu": dict(arch="SmolLM2-135M", model=SMOLLM2_135M, seq_len=1024, per_device_batch=32, effective_batch=64,
                steps=60, log_every=10, checkpoint_every=20, gen_prompts=512, gen_batch=256, gen_single=6,
                gen_new_tokens=128, lm_eval_limit=100, lm_eval_batch=64, launch_timeout=240, threads=4,
                # seconds for all phases; a phase starts only with its minimum left, a launch gets at
                # most what is left: the whole script ends inside 8 minutes, wheel install included.
                budget_s=420, min_left=dict(setup=60, train=120, resume=90, generation=60, lm_eval=90)),
    # CPU smoke: the same phases, two training processes over gloo, about a minute on two idle cores.
    "smoke": dict(arch="tiny", model=TINY, seq_len=192, per_device_batch=2, effective_batch=8,
                  steps=16, log_every=4, checkpoint_every=4, gen_prompts=16, gen_batch=8, gen_single=2,
                  gen_new_tokens=8, lm_eval_limit=1, lm_eval_batch=8, launch_timeout=240, threads=1,
                  budget_s=600, min_left=dict(setup=20, train=20, resume=20, generation=20, lm_eval=20)),
}
GEN_GOAL = 20.0  # batched answers/s over one-at-a-time answers/s
LM_EVAL_TASKS = ["oracle"]  # the group: oracle_gen, oracle_mc and their declared average
WORDS = "lion tiger cat dog bird fish wolf bear frog owl river stone cloud seven green quick".split()


def log(msg: str) -> None:
    print(f"[gpu_check {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def versions() -> dict:
    from importlib import metadata
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "accelerate", "peft", "tokenizers", "jsonschema", "lm_eval", "datasets",
                 "pyarrow", "fsspec", "huggingface_hub"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def build_student(out_dir: Path, arch: dict, seq_len: int) -> int:
    """A LlamaForCausalLM of `arch` with random weights and the project's byte-level tokenizer; its parameters."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from lionflow.student.builtin import build_tokenizer

    torch.manual_seed(0)
    tokenizer = build_tokenizer(model_max_length=seq_len)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    model = LlamaForCausalLM(LlamaConfig(**arch, **ids))  # ids the tokenizer never makes are simply unused
    for k, v in ids.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return sum(p.numel() for p in model.parameters())  # tied embeddings counted once


def write_teacher_data(path: Path, n: int, seq_len: int) -> None:
    """n `answer` records of the oracle's instructions with answers long enough that every example is
    truncated to exactly seq_len tokens (byte tokenizer: one token per ASCII character): no padding."""
    import random

    from lionflow.artifacts import write_jsonl
    from lionflow.oracle.datasets import make_synthetic_pool

    rng = random.Random(0)
    records = []
    for i, it in enumerate(make_synthetic_pool(n, seed=1)):
        answer = " ".join(rng.choice(WORDS) for _ in range(seq_len // 3))
        records.append({"id": f"gpu-{i:06d}", "instruction": it["instruction"], "input": it.get("input", ""),
                        "answer": answer, "model": "synthetic-teacher", "finish_reason": "stop"})
    write_jsonl(path, records, "answer")


def processes(gpu: bool) -> int:
    """One training process per GPU of the machine; two CPU processes in the smoke."""
    import torch

    return torch.cuda.device_count() if gpu else 2


def launch_args(gpu: bool) -> list[str]:
    """rules/common.smk accelerate_launch_args for a job with the machine's GPUs: config/accelerate/gpus.yaml,
    one process per GPU. The smoke on CPU launches the same with two processes (over gloo). It goes through
    torchrun's agent, whose workers run in process sessions of their own (see kill_tree).
    """
    return ["--config_file", str(ROOT / "config/accelerate/gpus.yaml"), "--num_processes", str(processes(gpu))]


def kill_tree(proc: subprocess.Popen) -> int:
    """SIGKILL the launcher and every process under it, as a node failure or a cgroup kill would.

    Killing the launcher's process group is not enough: torchrun (under `accelerate launch` with the
    FSDP config or --multi_gpu) starts each worker in a session of its own, so the workers would
    outlive their agent and go on training and saving state. Returns how many processes were killed.
    """
    import psutil

    root = psutil.Process(proc.pid)
    procs = [root, *root.children(recursive=True)]
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait()
    _, alive = psutil.wait_procs(procs, timeout=60)
    if alive:
        raise RuntimeError(f"processes {[p.pid for p in alive]} survived SIGKILL")
    return len(procs)


def start_training(work: Path, name: str, cfg: dict, gpu: bool, log_path: Path, s: dict) -> subprocess.Popen:
    """rules/imitation.smk train_student's command, in its own process session (so it can be killed whole)."""
    cmd = [sys.executable, "-m", "accelerate.commands.launch", *launch_args(gpu), "-m", "lionflow.student.train",
           "--init", str(work / "init"), "--data", str(work / "data.jsonl"), "--out", str(work / name),
           "--state-dir", str(work / f"{name}.resume"), "--config-json", json.dumps(cfg), "--log-every", str(s["log_every"])]
    env = {**os.environ, "OMP_NUM_THREADS": str(s["threads"])}
    return subprocess.Popen(cmd, env=env, stdout=open(log_path, "w"), stderr=subprocess.STDOUT,
                            start_new_session=True)


def wait(proc: subprocess.Popen, timeout: float, log_path: Path, what: str) -> None:
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_tree(proc)
        raise RuntimeError(f"{what}: still running after {timeout:.0f} s (killed); log {log_path}") from None
    if rc != 0:
        tail = log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{what}: exit {rc}; log {log_path}:\n{tail}")


def time_left(s: dict) -> float:
    """A launch's timeout: its own limit, or what is left of the budget if that is less."""
    return max(1.0, min(s["launch_timeout"], s["deadline"] - time.time()))


def window_rates(log_text: str) -> list[float]:
    """The tok/s of each logged window of lionflow.student.train ('step 20/60 ... tok/s 123456')."""
    return [float(x) for x in re.findall(r"step \d+/\d+ .*? tok/s (\d+(?:\.\d+)?)", log_text)]


def phase_train(work: Path, s: dict, gpu: bool, n_params: int, out: dict) -> dict:
    """The uninterrupted run: throughput, MFU; its log is the reference for the resume check."""
    from train_throughput import peak_tflops
    from workflow_config import train_settings

    cfg = train_settings(epochs=1, learning_rate=3e-4, warmup_ratio=0.0, max_length=s["seq_len"],
                         effective_batch_size=s["effective_batch"], per_device_batch_size=s["per_device_batch"],
                         checkpoint_every_steps=0, seed=0)
    log_path = work / "train_whole.log"
    t0 = time.perf_counter()
    wait(start_training(work, "whole", cfg, gpu, log_path, s), time_left(s), log_path,
         "training (whole run)")
    wall = time.perf_counter() - t0
    summary = json.loads((work / "whole" / "training_log.json").read_text())
    rates = window_rates(log_path.read_text())
    timed = rates[1:] or rates  # the first window holds the warm-up
    tokens_per_s = sum(timed) / len(timed) if timed else None
    import torch
    name = torch.cuda.get_device_name() if gpu else None
    peak = peak_tflops(name) * processes(gpu) if name and peak_tflops(name) else None  # all the GPUs
    out["train"] = {
        "launch": "python -m accelerate.commands.launch " + " ".join(launch_args(gpu)).replace(str(ROOT) + "/", "")
                  + " -m lionflow.student.train",
        "precision": "bf16" if gpu else "fp32", "processes": summary["num_processes"],
        "sharding": {k: summary["sharding"].get(k) for k in ("method", "processes", "sharded_modules", "mixed_precision")},
        "state_memory_per_process_mib": summary["state_memory"]["per_rank"] if summary["state_memory"] else None,
        "seq_len": s["seq_len"], "per_device_batch": s["per_device_batch"],
        "grad_accum": summary["grad_accum"], "tokens_per_step": s["effective_batch"] * s["seq_len"],
        "optimizer_steps": summary["optimizer_steps"], "final_loss": summary["final_loss"],
        "first_loss": summary["steps"][0]["loss"] if summary["steps"] else None,
        "tokens_per_s": round(tokens_per_s, 1) if tokens_per_s else None,
        "tokens_per_s_windows": rates, "train_wall_s": summary["wall_time_s"], "launch_wall_s": round(wall, 1),
        "mfu": round(6 * n_params * tokens_per_s / (peak * 1e12), 4) if peak and tokens_per_s else None,
        "mfu_formula": "6 * params * tokens_per_s / peak_flops (attention FLOPs left out)",
        "peak_flops": peak * 1e12 if peak else None,
        "peak_flops_source": f"{processes(gpu)} x {name}: dense bf16 datasheet figure (benchmarks/train_throughput.py)"
                             if peak else
                             "no GPU: no MFU",
    }
    return {**cfg, "_whole": summary}


def phase_resume(work: Path, s: dict, gpu: bool, cfg: dict, out: dict) -> None:
    whole = cfg.pop("_whole")
    cfg = {**cfg, "checkpoint_every_steps": s["checkpoint_every"]}
    state = work / "killed.resume"
    killed_log, resumed_log = work / "train_killed.log", work / "train_resumed.log"
    proc = start_training(work, "killed", cfg, gpu, killed_log, s)
    timeout = time_left(s)
    deadline = time.time() + timeout
    while not (state / "latest" / "progress.json").exists():  # the first saved state
        if proc.poll() is not None:
            raise RuntimeError(f"training to be killed ended (exit {proc.returncode}) before it saved a state; "
                               f"log {killed_log}:\n{killed_log.read_text(errors='replace')[-3000:]}")
        if time.time() > deadline:
            kill_tree(proc)
            raise RuntimeError(f"no training state in {state} after {timeout:.0f} s; log {killed_log}")
        time.sleep(0.01)
    first_saved = json.loads((state / "latest" / "progress.json").read_text())["step"]
    killed = kill_tree(proc)  # the launcher, torchrun's agent and the training processes, mid-run
    if (work / "killed" / "training_log.json").exists():
        raise RuntimeError("the training meant to be killed had already finished: raise `steps` in SIZES")
    saved = json.loads((state / "latest" / "progress.json").read_text())["step"]
    t0 = time.perf_counter()
    wait(start_training(work, "killed", cfg, gpu, resumed_log, s), time_left(s), resumed_log,
         "resumed training")
    resumed = json.loads((work / "killed" / "training_log.json").read_text())
    reference = {st["step"]: st["loss"] for st in whole["steps"]}
    diffs = [abs(st["loss"] - reference[st["step"]]) for st in resumed["steps"] if st["step"] in reference]
    expected_steps = list(range(saved + 1, whole["optimizer_steps"] + 1))
    ok = (resumed["resumed_from_step"] == saved and resumed["optimizer_steps"] == whole["optimizer_steps"]
          and [st["step"] for st in resumed["steps"]] == expected_steps and not state.exists())
    out["resume"] = {"ok": ok, "killed_with": "SIGKILL to the launcher and all its descendants",
                     "processes_killed": killed, "first_saved_step": first_saved, "saved_step": saved,
                     "resumed_from_step": resumed["resumed_from_step"], "optimizer_steps": resumed["optimizer_steps"],
                     "expected_optimizer_steps": whole["optimizer_steps"],
                     "loss_max_abs_diff_vs_uninterrupted": round(max(diffs), 6) if diffs else None,
                     "resumed_launch_wall_s": round(time.perf_counter() - t0, 1)}
    if not ok:
        raise RuntimeError(f"resume check failed: {out['resume']}; log {resumed_log}")


def phase_generation(work: Path, s: dict, gpu: bool, out: dict) -> None:
    import random

    import torch
    from scale import one_at_a_time
    from workflow_config import generate_config

    from lionflow.oracle.datasets import make_synthetic_pool
    from lionflow.student.generate import generate_answers

    device = "cuda" if gpu else "cpu"
    dtype = "bfloat16" if gpu else "float32"
    model_dir = work / "init"  # untrained: every greedy answer runs to max_new_tokens
    items = list(make_synthetic_pool(s["gen_prompts"], seed=3))
    sample = sorted(random.Random(0).sample(range(len(items)), s["gen_single"]))

    def sync():
        if gpu:
            torch.cuda.synchronize()

    single, single_answers = {}, {}
    for attn in ("sdpa", "eager"):
        one_at_a_time(model_dir, items[:1], 4, dtype, attn)  # warm-up
        sync()
        t0 = time.perf_counter()
        single_answers[attn] = one_at_a_time(model_dir, [items[i] for i in sample], s["gen_new_tokens"], dtype, attn)
        sync()
        single[attn] = s["gen_single"] / (time.perf_counter() - t0)
    cfg = generate_config(max_new_tokens=s["gen_new_tokens"], temperature=0.0, batch_size=s["gen_batch"],
                          dtype=dtype)
    generate_answers(model_dir, items[:s["gen_batch"]], cfg, device=device)  # warm-up
    sync()
    t0 = time.perf_counter()
    answers = generate_answers(model_dir, items, cfg, device=device)
    sync()
    batched = len(items) / (time.perf_counter() - t0)
    fastest = max(single, key=single.get)
    ratio = batched / single[fastest]
    out["generation"] = {
        "device": device, "dtype": dtype, "model": "untrained student (answers run to max_new_tokens)",
        "max_new_tokens": s["gen_new_tokens"], "prompts_batched": len(items), "batch_size": s["gen_batch"],
        "prompts_one_at_a_time": s["gen_single"],
        "batched_answers_per_s": round(batched, 2),
        "one_at_a_time_answers_per_s": {k: round(v, 3) for k, v in single.items()},
        "ratio_vs_fastest_one_at_a_time": round(ratio, 1), "goal_ratio": GEN_GOAL, "goal_met": ratio >= GEN_GOAL,
        "same_answer_as_one_at_a_time": sum(answers[i] == a for i, a in zip(sample, single_answers[fastest])),
        "finish_length": sum(a["finish_reason"] == "length" for a in answers),
    }


def phase_lm_eval(work: Path, s: dict, gpu: bool, out: dict) -> None:
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        out["lm_eval"] = {"status": "skipped",
                          "reason": f"lm-eval does not import ({e}); its wheels travel in .gpu-wheels/: "
                                    "`bash benchmarks/gpu_check.sh --prepare` here, carry .gpu-wheels"}
        return
    from lionflow.evaluation import run_lm_eval

    device = "cuda" if gpu else "cpu"
    t0 = time.perf_counter()
    scores, _ = run_lm_eval(work / "whole", LM_EVAL_TASKS, include_path=ROOT / "resources/lm_eval",
                         out_json=work / "lm_eval.json", batch_size=s["lm_eval_batch"], limit=s["lm_eval_limit"],
                         device=device)
    results = json.loads((work / "lm_eval.json").read_text())
    out["lm_eval"] = {"status": "ran", "device": device, "model": "the trained checkpoint of the uninterrupted run",
                      "limit_per_task": s["lm_eval_limit"], "scores": scores,
                      "model_device": str(results.get("config", {}).get("device")),
                      "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", default=os.environ.get("GPU_CHECK_SMOKE") == "1",
                   help="tiny sizes on the CPU (also GPU_CHECK_SMOKE=1)")
    p.add_argument("--work", type=Path, help="scratch folder (default: a new temporary one)")
    p.add_argument("--skip", default="", help="comma-separated phases to leave out (train,resume,generation,lm_eval)")
    a = p.parse_args(argv)
    t_start = time.perf_counter()
    mode = "smoke" if a.smoke else "gpu"
    s = {**SIZES[mode], "deadline": time.time() + SIZES[mode]["budget_s"]}
    if a.smoke:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # training subprocesses and this one: CPU only
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the GPU machine reaches no network: never wait on one
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    out_dir = Path(os.environ["OUT"]) if os.environ.get("OUT") else None
    skip = {x for x in a.skip.split(",") if x}
    import tempfile
    work = a.work or Path(tempfile.mkdtemp(prefix="gpu-check-"))
    work.mkdir(parents=True, exist_ok=True)

    out: dict = {"check": "benchmarks/gpu_check.sh", "mode": mode, "budget_s": s["budget_s"],
                 "versions": versions(), "phases_s": {},
                 "errors": {}}
    try:
        import torch
    except ImportError as e:
        out["errors"]["setup"] = f"torch does not import: {e}"
        return finish(out, t_start, out_dir, work)
    gpu = torch.cuda.is_available() and not a.smoke
    if a.smoke:
        torch.set_num_threads(s["threads"])
    out["device"] = torch.cuda.get_device_name() if gpu else f"cpu ({os.cpu_count()} cores)"
    if not gpu and not a.smoke:
        out["errors"]["setup"] = "no CUDA device visible to torch: run with --smoke on a CPU machine"
        return finish(out, t_start, out_dir, work)
    try:
        import lionflow.student.train  # noqa: F401  (lionflow.artifacts: jsonschema, fastjsonschema)
    except ImportError as e:
        out["errors"]["setup"] = (f"the training entry does not import ({e}): on the GPU machine its missing "
                                  "packages travel as wheels: `bash benchmarks/gpu_check.sh --prepare` here, "
                                  "carry .gpu-wheels")
        return finish(out, t_start, out_dir, work)

    def phase(name, fn, *args, needs=()):
        if name in skip:
            out["phases_s"][name] = "skipped (--skip)"
            return None
        missing = [n for n in needs if n in out["errors"] or n in skip]
        if missing:
            out["errors"][name] = f"not run: needs {missing}"
            return None
        left = s["deadline"] - time.time()
        if left < s["min_left"][name]:
            out["errors"][name] = (f"not run: {left:.0f} s left of the {s['budget_s']} s budget, "
                                   f"the phase needs {s['min_left'][name]} s")
            return None
        log(f"{name} ...")
        t0 = time.perf_counter()
        try:
            return fn(*args)
        except Exception as e:  # one failing phase still leaves the others' figures
            out["errors"][name] = f"{type(e).__name__}: {e}"
            log(traceback.format_exc())
        finally:
            out["phases_s"][name] = round(time.perf_counter() - t0, 1)
            log(f"{name} done in {out['phases_s'][name]} s")
            write_partial(out, out_dir)

    def setup():
        n_params = build_student(work / "init", s["model"], s["seq_len"])
        write_teacher_data(work / "data.jsonl", s["steps"] * s["effective_batch"], s["seq_len"])
        out["model"] = {"arch": s["arch"], "weights": "random", "params": n_params, "config": s["model"],
                        "tokenizer": "lionflow.student.builtin.build_tokenizer (byte-level, 259 tokens)"}
        return n_params

    # every process gets whole micro-batches: the effective batch grows with the GPUs of a bigger machine
    s["effective_batch"] = math.lcm(s["effective_batch"], s["per_device_batch"] * processes(gpu))
    n_params = phase("setup", setup)
    cfg = phase("train", phase_train, work, s, gpu, n_params, out, needs=("setup",))
    phase("resume", phase_resume, work, s, gpu, cfg or {}, out, needs=("train",))
    phase("generation", phase_generation, work, s, gpu, out, needs=("setup",))
    phase("lm_eval", phase_lm_eval, work, s, gpu, out, needs=("train",))
    return finish(out, t_start, out_dir, work)


def write_partial(out: dict, out_dir: Path | None) -> None:
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "gpu_check.json").write_text(json.dumps(out, indent=1))


def finish(out: dict, t_start: float, out_dir: Path | None, work: Path) -> int:
    out["wall_s"] = round(time.perf_counter() - t_start, 1)
    lm = out.get("lm_eval", {}).get("status")
    out["ok"] = not out["errors"] and "train" in out and out.get("resume", {}).get("ok", False) \
        and "generation" in out and lm in ("ran", "skipped")
    out["failed_stage"] = next(iter(out["errors"]), None)  # the first phase that failed (benchmarks/stages.py's key)
    out["work"] = str(work)
    if out_dir:
        write_partial(out, out_dir)
        for name in ("train_whole.log", "train_killed.log", "train_resumed.log", "lm_eval.json"):
            if (work / name).exists():
                (out_dir / name).write_bytes((work / name).read_bytes()[-8_000_000:])
    print(json.dumps(out), flush=True)
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
