"""Instruction-tune the student on (instruction, input, answer) examples.

A plain accelerate loop (not HF Trainer), to be read top to bottom: config, data, model,
optimizer, loop, checkpointing. Loss on response tokens only. The same file runs as one CPU
process, under `torchrun`/`accelerate launch` with several CPU processes (gloo), and on GPUs
with the FSDP config in config/accelerate/ (`accelerate launch --config_file ...`).

Preemption-safe: every `checkpoint_every_steps` optimizer steps the full training state
(model, optimizer, scheduler, RNG, data position) goes to `state_dir`; a rerun after a kill,
preemption or requeue resumes there and ends with the same optimizer steps as an
uninterrupted run. The data order is a pure function of (seed, epoch), so resuming mid-epoch
replays exactly the batches that were not yet trained.

LoRA (`lora`, see lora.py): only the adapters train; the checkpoint is the merged model, the
adapter is saved beside it in `<out>/adapter/`. training_log.json records the trainable and
total parameters and the process's peak memory either way.
"""
import argparse
import contextlib
import dataclasses
import json
import logging
import math
import random
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

from ..artifacts import atomic_write, read_jsonl
from . import lora as lora_
from .device import peak_memory, resolve_device
from .prompting import ensure_chat_template, prompt_text

log = logging.getLogger("lionflow.student.train")


@dataclass
class TrainConfig:
    """The validated config's `student.train` (config/schema.yaml holds the defaults and their meaning:
    the Lion/Alpaca recipe) and the iteration's training seed."""
    epochs: int
    learning_rate: float
    lr_scheduler: str
    warmup_ratio: float
    weight_decay: float
    max_length: int
    effective_batch_size: int
    per_device_batch_size: int
    seed: int
    bf16: bool  # only used on CUDA; CPU trains in fp32
    max_grad_norm: float
    checkpoint_every_steps: int  # resumable state every N optimizer steps (0: never)
    lora: dict | None  # student.train.lora (None or enabled: false - full fine-tuning)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown, missing = set(d) - fields, fields - set(d)
        if unknown or missing:
            raise ValueError(f"student.train: unknown keys {sorted(unknown)}, missing keys {sorted(missing)} "
                             "(pass the validated config's student.train and the seed)")
        return cls(**d)


def encode_example(tokenizer, ex: dict, max_length: int) -> tuple[dict, bool]:
    """Token ids and labels: prompt tokens are -100, response + EOS are trained.

    Prompt and response are tokenized separately so the boundary is exact.
    Returns (features, truncated).
    """
    prompt = tokenizer(prompt_text(tokenizer, ex["instruction"], ex.get("input", "")),
                       add_special_tokens=True).input_ids
    response = tokenizer(ex["answer"], add_special_tokens=False).input_ids + [tokenizer.eos_token_id]
    ids = (prompt + response)[:max_length]
    labels = ([-100] * len(prompt) + response)[:max_length]
    return {"input_ids": ids, "labels": labels}, len(prompt) + len(response) > max_length


def collate(batch: list[dict], pad_id: int) -> dict:
    # Right padding for training; padded positions are masked and not trained.
    n = max(len(b["input_ids"]) for b in batch)
    ids = torch.full((len(batch), n), pad_id)
    labels = torch.full((len(batch), n), -100)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, b in enumerate(batch):
        k = len(b["input_ids"])
        ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(b["input_ids"]), torch.tensor(b["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def parameter_counts(model: torch.nn.Module) -> dict:
    """Trainable and total parameters (before any sharding)."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return {"trainable_parameters": trainable, "total_parameters": total,
            "trainable_percent": round(100 * trainable / total, 4)}


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def epoch_batches(n_examples: int, epoch: int, cfg: TrainConfig, rank: int, world: int) -> list[list[int]]:
    """This process's micro-batches (example indices) of an epoch: a pure function of (seed, epoch).

    Every process gets the same number of batches (the permutation wraps around, as in
    DistributedSampler), so no process waits on a collective the others never reach.
    """
    order = torch.randperm(n_examples, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)).tolist()
    per_process = math.ceil(n_examples / world)
    order = (order * math.ceil(per_process * world / n_examples))[:per_process * world]
    mine = order[rank::world]
    return [mine[i:i + cfg.per_device_batch_size] for i in range(0, len(mine), cfg.per_device_batch_size)]


def _save_state(accelerator, state_dir: Path, progress: dict):
    """Atomically replace state_dir/latest with the current training state."""
    tmp, latest = state_dir / f"tmp-{progress['step']}", state_dir / "latest"
    accelerator.save_state(str(tmp))  # model, optimizer, registered scheduler, RNG states
    if accelerator.is_main_process:
        (tmp / "progress.json").write_text(json.dumps(progress))
        old = state_dir / "old"
        if latest.exists():
            latest.rename(old)
        tmp.rename(latest)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def train(init_dir, examples: list[dict], out_dir, cfg: TrainConfig, state_dir=None, device: str = "auto",
          log_every: int = 10) -> dict:
    t0 = time.time()
    on_gpu = resolve_device(device).startswith("cuda")
    use_bf16 = cfg.bf16 and on_gpu
    # cpu=True without a GPU (or with student.device: cpu): several processes then train over gloo.
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no", cpu=not on_gpu)
    seed_everything(cfg.seed)

    # gradient accumulation: effective batch = per_device x processes x accumulation
    per_step = cfg.per_device_batch_size * accelerator.num_processes
    if cfg.effective_batch_size % per_step:
        raise ValueError(f"student.train.effective_batch_size={cfg.effective_batch_size} is not a multiple of "
                         f"student.train.per_device_batch_size={cfg.per_device_batch_size} x {accelerator.num_processes} "
                         "processes (the GPUs of the job): change one of them")
    grad_accum = cfg.effective_batch_size // per_step

    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(init_dir))
    lora = lora_.LoraSettings.from_config(cfg.lora)
    if lora:
        lora_.check_4bit(lora, on_gpu, accelerator.num_processes)
        model = lora_.load_for_training(init_dir, lora, accelerator.device)
    else:
        model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    counts = parameter_counts(model)
    log.info("%s: %d trainable parameters of %d (%.2f%%)", "LoRA" if lora else "full fine-tuning",
             counts["trainable_parameters"], counts["total_parameters"], counts["trainable_percent"])

    encoded = [encode_example(tokenizer, ex, cfg.max_length) for ex in examples]
    n_trunc = sum(t for _, t in encoded)
    if n_trunc:
        log.warning("truncated %d/%d examples to max_length=%d", n_trunc, len(encoded), cfg.max_length)
    data = [f for f, _ in encoded]

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    micro_per_epoch = len(epoch_batches(len(data), 0, cfg, accelerator.process_index, accelerator.num_processes))
    steps_per_epoch = math.ceil(micro_per_epoch / grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    # Stepped by hand once per optimizer step, so its count does not depend on the process count.
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    accelerator.register_for_checkpointing(scheduler)

    step, start_epoch, start_micro, resumed_from = 0, 0, 0, None
    state_dir = Path(state_dir) if state_dir else None
    # "old" is the previous state during the instant _save_state swaps it for the new one.
    saved = [d for d in ("latest", "old") if state_dir and (state_dir / d / "progress.json").exists()]
    if saved:
        accelerator.load_state(str(state_dir / saved[0]))
        progress = json.loads((state_dir / saved[0] / "progress.json").read_text())
        step, start_epoch, start_micro, resumed_from = (progress["step"], progress["epoch"],
                                                        progress["micro"], progress["step"])
        log.info("resuming from step %d (epoch %d, micro-batch %d) in %s", step, start_epoch, start_micro, state_dir)
    log.info("%d examples, %d epochs, %d optimizer steps (batch %d x %d proc x %d accum), %s",
             len(data), cfg.epochs, total_steps, cfg.per_device_batch_size,
             accelerator.num_processes, grad_accum, "bf16" if use_bf16 else "fp32")

    model.train()
    history, window_loss, window_n, tokens, t_log = [], 0.0, 0, 0, time.time()
    for epoch in range(start_epoch, cfg.epochs):
        batches = epoch_batches(len(data), epoch, cfg, accelerator.process_index, accelerator.num_processes)
        first = start_micro if epoch == start_epoch else 0
        for i in range(first, len(batches)):
            batch = {k: v.to(accelerator.device) for k, v in
                     collate([data[j] for j in batches[i]], tokenizer.pad_token_id).items()}
            last_micro = (i + 1) % grad_accum == 0 or i + 1 == len(batches)
            # the epoch's last window may be short: average over its real size
            window = min(grad_accum, len(batches) - i // grad_accum * grad_accum)
            # no gradient all-reduce on intermediate micro-batches
            with contextlib.nullcontext() if last_micro else accelerator.no_sync(model):
                loss = model(**batch).loss
                accelerator.backward(loss / window)
            window_loss += loss.item()
            window_n += 1
            tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
            if not last_micro:
                continue
            if cfg.max_grad_norm:
                accelerator.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            history.append({"step": step, "epoch": epoch, "loss": window_loss / window_n,
                            "lr": scheduler.get_last_lr()[0]})
            if step % log_every == 0 or step == total_steps:
                dt = time.time() - t_log
                log.info("step %d/%d epoch %d loss %.4f lr %.2e tok/s %.0f", step, total_steps,
                         epoch, history[-1]["loss"], history[-1]["lr"], tokens / max(dt, 1e-9))
                tokens, t_log = 0, time.time()
            window_loss, window_n = 0.0, 0
            if state_dir and cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 \
                    and step < total_steps:
                _save_state(accelerator, state_dir, {"step": step, "epoch": epoch, "micro": i + 1})

    accelerator.wait_for_everyone()
    trained = peak_memory(str(accelerator.device))  # the training loop's peak (model, optimizer, activations)
    state_dict = accelerator.get_state_dict(model)  # gathers shards under FSDP
    summary = {"config": dataclasses.asdict(cfg), "num_examples": len(data), "truncated": n_trunc,
               "num_processes": accelerator.num_processes, "grad_accum": grad_accum,
               "optimizer_steps": step, "resumed_from_step": resumed_from,
               "final_loss": history[-1]["loss"] if history else None,
               "wall_time_s": round(time.time() - t0, 2), "method": "lora" if lora else "full", **counts,
               **trained, "steps": history}
    if accelerator.is_main_process:
        out_dir = Path(out_dir)
        if lora:  # the adapter in out/adapter/, the merged model as the checkpoint
            lora_.save_merged(accelerator.unwrap_model(model), state_dict, init_dir, out_dir)
        else:
            accelerator.unwrap_model(model).save_pretrained(out_dir, state_dict=state_dict)
        tokenizer.save_pretrained(out_dir)
        # the job's peak: training, gathering, saving and (LoRA) merging
        summary = {**summary, **{f"job_{k}": v for k, v in peak_memory(str(accelerator.device)).items()}}
        atomic_write(out_dir / "training_log.json", json.dumps(summary, indent=1))
        log.info("saved %s (final loss %.4f, %.1fs)", out_dir, summary["final_loss"] or float("nan"),
                 summary["wall_time_s"])
        if state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)  # done: nothing left to resume
    accelerator.wait_for_everyone()
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--init", required=True, help="model dir to start from")
    p.add_argument("--data", required=True, help="JSONL of teacher answers (schema `answer`)")
    p.add_argument("--out", required=True)
    p.add_argument("--state-dir", help="resumable training state (default: <out>.resume)")
    p.add_argument("--config-json", required=True, help="the validated config's student.train and the seed, as JSON")
    p.add_argument("--checkpoint-every-steps", type=int, help="overrides the config's checkpoint_every_steps")
    p.add_argument("--log-every", type=int, default=10, help="optimizer steps between loss lines in the log")
    p.add_argument("--device", default="auto", help="student.device: auto (the job's GPU when it has one), cpu, cuda[:N]")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    examples = read_jsonl(a.data, "answer")
    settings = json.loads(a.config_json)
    if a.checkpoint_every_steps is not None:
        settings["checkpoint_every_steps"] = a.checkpoint_every_steps
    train(a.init, examples, a.out, TrainConfig.from_dict(settings),
          state_dir=a.state_dir or f"{a.out.rstrip('/')}.resume", device=a.device, log_every=a.log_every)


if __name__ == "__main__":
    main()
