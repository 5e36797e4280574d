"""Training throughput of the student against its anchors: lionflow's loop, TRL's SFTTrainer, the machine's peak.

    python benchmarks/train_throughput.py                 # SmolLM2-135M-Instruct (models/, `make smollm2`), CPU
    python benchmarks/train_throughput.py --smoke         # tiny built student, seconds, the same JSON keys
    python benchmarks/train_throughput.py --arms lionflow-bf16,trl-bf16 --examples 128

Side by side in one run, each arm in a fresh process of its own (so each has its own peak memory),
on the same starting checkpoint (the base student built as the workflow builds it, from the GGUF
file or `builtin:tiny`), the same examples (seed-pool instructions answered by the embedded
oracle, encoded by lionflow's own `encode_example`: chat template, loss on the response only), the
same batch, max length, epochs, learning rate, schedule, warmup, clipping and seed:

- `lionflow-<precision>`: `lionflow.student.train.train()`, the training rule's loop (random batches,
  each packed into one row with the examples kept apart, fused AdamW, the LM head on trained positions
  only; `bf16`: `student.train.bf16` and `cpu_bf16`, autocast on a CPU with native bf16; `fp32`: the
  CPU default). `lionflow_padded-fp32`: the same loop with `packing: false` (right-padded batches).
- `trl-<precision>`: TRL's `SFTTrainer` (a benchmark dependency: `pip install -e '.[bench]'`) on the
  same token ids and labels (a pre-tokenized dataset), its defaults otherwise (random batches, its
  fused LM-head loss) except `gradient_checkpointing=False` (TRL's default True recomputes every
  layer's forward, ~30 % slower, to save memory this model does not need; `--trl-defaults` keeps it).
- `peak`: the best of a few dense square matmuls (fp32 and bf16) in this process, before and after
  the arms: what the machine's cores can do at best in each precision.

Figures per arm: non-padding tokens/s over the training loop only (model loading and saving left
out), the share of computed tokens that were padding, the process's peak RSS, the last step's
training loss, the final loss (per-token loss of the trained model over all the examples, fp32, the
same code for every arm: the loss the arms must match), and the fraction of the measured peak of
the arm's precision (6 x parameters FLOPs per non-padding token; attention left out). The last
stdout line is one JSON object of the figures.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from stages import Stages

ROOT = Path(__file__).resolve().parents[1]
GGUF = ROOT / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
ARMS = ("lionflow-fp32", "trl-fp32", "lionflow_padded-fp32", "lionflow-bf16", "trl-bf16")
# Dense bf16 datasheet peaks of GPUs, in TFLOP/s (benchmarks/gpu_check.py's MFU)
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}
run = Stages("train_throughput")


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def peak_flops(size: int, reps: int) -> dict:
    """Best dense matmul FLOP/s of this process in fp32 and bf16 (square matrices of `size`)."""
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * size**3 / best
    return out


def make_examples(n: int, tmp: Path) -> list[dict]:
    """n seed-pool instructions answered by the embedded oracle (the demo's teacher), as `answer` records."""
    from workflow_config import load_config

    from lionflow.imitation import teacher_answers
    from lionflow.oracle.datasets import make_seed_pool
    from lionflow.prompts import PromptTemplate
    from lionflow.smk import llm_for

    config = load_config(str(ROOT / "config" / "smollm2.yaml"))
    llm = {**config["llm"], "cache_dir": str(tmp / "cache"), "ledger_dir": str(tmp / "ledger")}
    cwd = os.getcwd()
    os.chdir(ROOT)
    try:
        answers, _ = teacher_answers(llm_for({"llm": llm}, "teacher"), PromptTemplate.load(config["llm"]["teacher"]["prompt"]),
                                     make_seed_pool(n, seed=7), max_failure_rate=0.0)
    finally:
        os.chdir(cwd)
    return answers


def final_loss(model, data: list[dict], pad_id: int, batch: int) -> float:
    """Per-token loss (response tokens) of `model` over every example, fp32, length-sorted batches."""
    import torch

    from lionflow.student.train import collate

    model.eval()
    total, n = 0.0, 0
    order = sorted(range(len(data)), key=lambda j: len(data[j]["input_ids"]))
    with torch.no_grad():
        for i in range(0, len(order), batch):
            b = collate([data[j] for j in order[i:i + batch]], pad_id)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits.float()
            labels = b["labels"][:, 1:]
            total += float(torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.size(-1)),
                                                             labels.reshape(-1), ignore_index=-100, reduction="sum"))
            n += int((labels != -100).sum())
    return total / n


def run_lionflow(a, base: str, examples: list[dict], out: Path, bf16: bool, packed: bool = True) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lionflow.student.train import TrainConfig, encode_examples, train

    cfg = TrainConfig(epochs=a.epochs, learning_rate=a.lr, lr_scheduler="cosine", warmup_ratio=0.03,
                      weight_decay=0.0, max_length=a.max_length, effective_batch_size=a.batch,
                      per_device_batch_size=a.batch, seed=0, bf16=bf16, max_grad_norm=1.0,
                      checkpoint_every_steps=0, fsdp=True, lora=None, cpu_bf16=bf16,
                      packing=packed)
    log = train(base, examples, out, cfg, device="cpu", log_every=10**6)
    tokenizer = AutoTokenizer.from_pretrained(out)
    data = encode_examples(tokenizer, examples, a.max_length)[0]
    model = AutoModelForCausalLM.from_pretrained(out)
    return {"precision": log["precision"], "train_s": log["train_loop_s"], "trained_tokens": log["trained_tokens"],
            "computed_tokens": log["computed_tokens"], "optimizer_steps": log["optimizer_steps"],
            "peak_rss_mib": log["peak_rss_mib"], "last_step_loss": log["final_loss"],
            "final_loss": final_loss(model, data, tokenizer.pad_token_id, a.batch),
            "params": log["total_parameters"]}


def run_trl(a, base: str, examples: list[dict], out: Path, bf16: bool) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from lionflow.student.device import peak_memory
    from lionflow.student.prompting import ensure_chat_template
    from lionflow.student.train import encode_examples

    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(base))
    tokenizer.padding_side = "right"
    data = encode_examples(tokenizer, examples, a.max_length)[0]
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    args = SFTConfig(output_dir=str(out), per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
                     num_train_epochs=a.epochs, learning_rate=a.lr, lr_scheduler_type="cosine", warmup_steps=0.03,
                     weight_decay=0.0, max_grad_norm=1.0, max_length=a.max_length, bf16=bf16, use_cpu=True, seed=0,
                     save_strategy="no", report_to="none", logging_steps=1, disable_tqdm=True,
                     **({} if a.trl_defaults else {"gradient_checkpointing": False}))
    trainer = SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(data), processing_class=tokenizer)
    counts = {"trained": 0, "computed": 0}
    collator = trainer.data_collator

    def counting(features):
        batch = collator(features)
        counts["trained"] += int(batch["attention_mask"].sum())
        counts["computed"] += batch["attention_mask"].numel()
        return batch

    trainer.data_collator = counting
    result = trainer.train()
    peak = peak_memory("cpu")
    losses = [r["loss"] for r in trainer.state.log_history if "loss" in r]
    return {"precision": "bf16" if bf16 else "fp32", "train_s": round(result.metrics["train_runtime"], 2),
            "trained_tokens": counts["trained"], "computed_tokens": counts["computed"],
            "optimizer_steps": trainer.state.global_step, "peak_rss_mib": peak["peak_rss_mib"],
            "last_step_loss": losses[-1] if losses else None,
            "final_loss": final_loss(trainer.model, data, tokenizer.pad_token_id, a.batch),
            "params": sum(p.numel() for p in model.parameters()),
            "gradient_checkpointing": bool(args.gradient_checkpointing)}


def child(a) -> None:
    """One arm, in this (fresh) process: prints its figures as one JSON line."""
    from lionflow.artifacts import read_jsonl

    examples = read_jsonl(a.data, "answer")
    kind, precision = a.arm.split("-")
    if kind == "lionflow_padded":
        out = run_lionflow(a, a.base, examples, Path(a.out), precision == "bf16", packed=False)
    else:
        out = (run_lionflow if kind == "lionflow" else run_trl)(a, a.base, examples, Path(a.out), precision == "bf16")
    print(json.dumps(out))


def padding_share_random(lengths: list[int], batch: int, epochs: int) -> float:
    """The padding share of the same epochs with random (not length-grouped) batches, as the loop had them."""
    import torch

    pad = comp = 0
    for epoch in range(epochs):
        order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(epoch)).tolist()
        for i in range(0, len(order), batch):
            b = [lengths[j] for j in order[i:i + batch]]
            comp += max(b) * len(b)
            pad += max(b) * len(b) - sum(b)
    return pad / comp


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(GGUF), help="a .gguf file, builtin:tiny or a model directory")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, of {', '.join(ARMS)} (run in this order)")
    p.add_argument("--examples", type=int, default=96)
    p.add_argument("--batch", type=int, default=8, help="sequences per optimizer step (no accumulation)")
    p.add_argument("--max-length", type=int, default=128)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="OMP_NUM_THREADS of each arm")
    p.add_argument("--peak-size", type=int, default=2048, help="matmul size of the peak measurement")
    p.add_argument("--trl-defaults", action="store_true", help="TRL with its gradient_checkpointing=True default")
    p.add_argument("--arm", help=argparse.SUPPRESS)
    p.add_argument("--base", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--out", help=argparse.SUPPRESS)
    a = run.parse(p, smoke=dict(model="builtin:tiny", examples=16, batch=4, max_length=256, epochs=1, peak_size=512))
    if a.arm:
        return child(a)
    run.stage("examples")
    import importlib.util

    from lionflow.artifacts import write_jsonl
    from lionflow.student.builtin import resolve_base_model

    arms = a.arms.split(",")
    if unknown := set(arms) - set(ARMS):
        raise SystemExit(f"--arms: unknown {sorted(unknown)}; known: {', '.join(ARMS)}")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="train-throughput-") as tmp:
        tmp = Path(tmp)
        base = resolve_base_model(a.model, tmp / "base", seed=0, chat_template="auto")
        from transformers import AutoTokenizer

        from lionflow.student.train import encode_example
        tokenizer = AutoTokenizer.from_pretrained(base)
        # examples that fit max_length whole (a truncated one can lose every trained token, and TRL drops those)
        examples = [ex for ex in make_examples(a.examples, tmp) if not encode_example(tokenizer, ex, a.max_length)[1]]
        write_jsonl(tmp / "data.jsonl", examples, "answer")
        run.stage("peak")
        peaks = [peak_flops(a.peak_size, 3 if a.smoke else 5)]
        rows = {}
        for arm in arms:
            run.stage(arm)
            if arm.startswith("trl") and importlib.util.find_spec("trl") is None:
                rows[arm] = {"skipped": "trl is not installed (pip install -e '.[bench]')"}
                continue
            cmd = [sys.executable, __file__, "--arm", arm, "--base", str(base), "--data", str(tmp / "data.jsonl"),
                   "--out", str(tmp / arm), "--batch", str(a.batch), "--max-length", str(a.max_length),
                   "--epochs", str(a.epochs), "--lr", str(a.lr)] + (["--trl-defaults"] if a.trl_defaults else [])
            t0 = time.time()
            proc = subprocess.run(cmd, capture_output=True, text=True,
                                  env={**os.environ, "OMP_NUM_THREADS": str(a.threads)})
            if proc.returncode:
                raise SystemExit(f"{arm} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}")
            rows[arm] = {**json.loads(proc.stdout.strip().splitlines()[-1]), "process_s": round(time.time() - t0, 1)}
            print(f"{arm}: {json.dumps(rows[arm])} (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        run.stage("peak_after")
        peaks.append(peak_flops(a.peak_size, 3 if a.smoke else 5))
        lengths = [len(encode_example(tokenizer, ex, a.max_length)[0]["input_ids"]) for ex in examples]
        random_padding = padding_share_random(lengths, a.batch, a.epochs)
    peak = {k: max(pk[k] for pk in peaks) for k in ("fp32", "bf16")}
    for r in rows.values():
        if "skipped" in r:
            continue
        r["tokens_per_s"] = round(r["trained_tokens"] / r["train_s"], 1)
        r["padding_share"] = round(1 - r["trained_tokens"] / r["computed_tokens"], 4)
        r["fraction_of_peak"] = round(6 * r["params"] * r["tokens_per_s"] / peak[r["precision"]], 4)
        r["final_loss"] = round(r["final_loss"], 4)
        r["last_step_loss"] = None if r["last_step_loss"] is None else round(r["last_step_loss"], 4)
    ran = {k: r for k, r in rows.items() if "skipped" not in r}
    ratios = {}
    for prec in ("bf16", "fp32"):
        lf, trl = ran.get(f"lionflow-{prec}"), ran.get(f"trl-{prec}")
        if lf and trl:
            ratios[f"lionflow_over_trl_{prec}"] = {"tokens_per_s": round(lf["tokens_per_s"] / trl["tokens_per_s"], 3),
                                                   "final_loss": round(lf["final_loss"] / trl["final_loss"], 4)}
    if "lionflow_padded-fp32" in ran and "lionflow-fp32" in ran:
        lp, lf = ran["lionflow_padded-fp32"], ran["lionflow-fp32"]
        ratios["lionflow_packed_over_padded_fp32"] = {"tokens_per_s": round(lf["tokens_per_s"] / lp["tokens_per_s"], 3),
                                                      "final_loss": round(lf["final_loss"] / lp["final_loss"], 4)}
    if "lionflow-bf16" in ran and "lionflow-fp32" in ran:
        lb, lf = ran["lionflow-bf16"], ran["lionflow-fp32"]
        ratios["lionflow_bf16_over_fp32"] = {"tokens_per_s": round(lb["tokens_per_s"] / lf["tokens_per_s"], 3),
                                             "final_loss": round(lb["final_loss"] / lf["final_loss"], 4)}
    result = {"model": a.model, "smoke": a.smoke, "examples": len(examples), "examples_drawn": a.examples, "batch": a.batch,
              "max_length": a.max_length, "epochs": a.epochs, "threads": a.threads,
              "load_average_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
              "peak_flops": {k: round(v / 1e9, 1) for k, v in peak.items()}, "peak_unit": "GFLOP/s",
              "padding_share_random_batches": round(random_padding, 4), "arms": rows, "ratios": ratios}
    cols = ["precision", "tokens_per_s", "padding_share", "peak_rss_mib", "last_step_loss", "final_loss",
            "fraction_of_peak", "train_s", "optimizer_steps"]
    print(f"{a.model}: {len(examples)} examples (of {a.examples} drawn: those within max_length), batch {a.batch}, max_length {a.max_length}, {a.epochs} epochs; "
          f"peak {result['peak_flops']} GFLOP/s; random batches would pad {random_padding:.1%}")
    print("arm".ljust(15) + "".join(c.rjust(17) for c in cols))
    for arm, r in rows.items():
        print(arm.ljust(15) + ("  " + r["skipped"] if "skipped" in r else "".join(str(r.get(c)).rjust(17) for c in cols)))
    return result


if __name__ == "__main__":
    if "--arm" in sys.argv[1:]:
        main()   # one arm, in a child process: its own JSON line
    else:
        run.main(main)
