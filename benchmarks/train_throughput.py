"""Training throughput of the student: tokens/s per device and MFU.

    python benchmarks/train_throughput.py                       # builtin tiny student on CPU
    accelerate launch --config_file config/accelerate/gpus.yaml --num_processes 8 \
        benchmarks/train_throughput.py --model /path/to/llama --seq-len 1024 --batch 2
    (data-parallel through accelerate's prepare; the training rule's FSDP2 path: benchmarks/gpu_check.sh)
    python benchmarks/train_throughput.py --smoke                # tiny sizes, the same JSON keys

Times `--steps` optimizer steps (after `--warmup` untimed ones) of the same forward/backward/
AdamW step the training rule runs, on random token sequences of `--seq-len`. MFU uses the
usual 6 x parameters FLOPs per trained token (attention FLOPs left out) against the device's
dense bf16 peak (`--peak-tflops`, or a table of known GPUs). Prints a table, then one JSON line
(also when a stage fails: `failed_stage`, benchmarks/stages.py).
"""

import argparse
import tempfile
import time

import torch
from accelerate import Accelerator
from stages import Stages
from transformers import AutoModelForCausalLM

from lionflow.student.builtin import build_tiny_student

run = Stages("train_throughput")
PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L40S": 362.0, "A10": 125.0, "V100": 125.0}


def peak_tflops(name: str) -> float | None:
    return next((v for k, v in PEAK_BF16_TFLOPS.items() if k in name), None)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="builtin:tiny", help="builtin:tiny or a local model directory")
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch", type=int, default=16, help="sequences per device per step")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--peak-tflops", type=float, help="device peak (dense bf16) for MFU")
    args = run.parse(p, smoke=dict(seq_len=32, batch=2, steps=2, warmup=1))
    run.stage("setup")

    cuda = torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if cuda else "no", cpu=not cuda)
    model_dir = args.model
    if model_dir == "builtin:tiny":
        model_dir = build_tiny_student(tempfile.mkdtemp(prefix="tiny-"), seed=0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    n_params, vocab = sum(p.numel() for p in model.parameters()), model.config.vocab_size
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = torch.randint(0, vocab, (args.batch, args.seq_len), device=accelerator.device)

    def step():
        loss = model(input_ids=ids, labels=ids).loss
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    run.stage("train")
    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(args.steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0

    tokens_per_s = args.steps * args.batch * args.seq_len / elapsed  # per device
    device = torch.cuda.get_device_name() if cuda else f"cpu ({torch.get_num_threads()} threads)"
    peak = args.peak_tflops or (peak_tflops(device) if cuda else None)
    mfu = 6 * n_params * tokens_per_s / (peak * 1e12) if peak else None
    result = {"model": args.model, "params": n_params, "device": device, "processes": accelerator.num_processes,
              "seq_len": args.seq_len, "batch_per_device": args.batch, "tokens_per_s_per_device": round(tokens_per_s, 1),
              "mfu": round(mfu, 4) if mfu is not None else None}
    if accelerator.is_main_process:
        for k, v in result.items():
            print(f"{k:>24}  {v}")
    run.figures |= result


if __name__ == "__main__":
    run.main(main)
