"""Instruction-tune the student on (instruction, input, answer) examples.

A plain accelerate loop (not HF Trainer) so the recipe is readable and the model
goes through `accelerator.prepare` (FSDP later). Loss on response tokens only.
"""
import argparse
import contextlib
import dataclasses
import json
import logging
import math
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from accelerate import Accelerator
from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

from ..artifacts import read_jsonl
from .prompting import ensure_chat_template, prompt_text

log = logging.getLogger("lionflow.student.train")


@dataclass
class TrainConfig:  # defaults = the Lion/Alpaca seed recipe
    epochs: int = 3
    learning_rate: float = 2e-5
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.03
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0  # HF Trainer's default, which the seed recipe ran with
    max_length: int = 1024
    effective_batch_size: int = 128
    per_device_batch_size: int = 2
    seed: int = 0
    bf16: bool = True  # only used on CUDA; CPU trains in fp32
    log_every: int = 10

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {sorted(unknown)}")
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


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(init_dir, examples: list[dict], out_dir, cfg: TrainConfig = TrainConfig()) -> dict:
    t0 = time.time()
    use_bf16 = cfg.bf16 and torch.cuda.is_available()
    accelerator = Accelerator(mixed_precision="bf16" if use_bf16 else "no")
    seed_everything(cfg.seed)

    # gradient accumulation: effective batch = per_device x processes x accumulation
    per_step = cfg.per_device_batch_size * accelerator.num_processes
    grad_accum = max(1, cfg.effective_batch_size // per_step)
    if cfg.effective_batch_size % per_step:
        log.warning("effective_batch_size %d not divisible by %d; using %d x %d = %d",
                    cfg.effective_batch_size, per_step, per_step, grad_accum, per_step * grad_accum)

    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(init_dir))
    model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)

    encoded = [encode_example(tokenizer, ex, cfg.max_length) for ex in examples]
    n_trunc = sum(t for _, t in encoded)
    if n_trunc:
        log.warning("truncated %d/%d examples to max_length=%d", n_trunc, len(encoded), cfg.max_length)
    data = [f for f, _ in encoded]
    loader = torch.utils.data.DataLoader(
        data, batch_size=cfg.per_device_batch_size, shuffle=True,
        generator=torch.Generator().manual_seed(cfg.seed),
        collate_fn=lambda b: collate(b, tokenizer.pad_token_id))

    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    steps_per_epoch = math.ceil(len(loader) / grad_accum)
    total_steps = steps_per_epoch * cfg.epochs
    # The scheduler is stepped by hand once per optimizer step (not prepared), so
    # its step count does not depend on the number of processes.
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer,
                              num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    log.info("%d examples, %d epochs, %d optimizer steps (batch %d x %d proc x %d accum), %s",
             len(data), cfg.epochs, total_steps, cfg.per_device_batch_size,
             accelerator.num_processes, grad_accum, "bf16" if use_bf16 else "fp32")

    model.train()
    step, history, window_loss, window_n, tokens, t_log = 0, [], 0.0, 0, 0, time.time()
    for epoch in range(cfg.epochs):
        for i, batch in enumerate(loader):
            last_micro = (i + 1) % grad_accum == 0 or i + 1 == len(loader)
            # the epoch's last window may be short: average over its real size
            window = min(grad_accum, len(loader) - i // grad_accum * grad_accum)
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
            if step % cfg.log_every == 0 or step == total_steps:
                dt = time.time() - t_log
                log.info("step %d/%d epoch %d loss %.4f lr %.2e tok/s %.0f", step, total_steps,
                         epoch, history[-1]["loss"], history[-1]["lr"], tokens / max(dt, 1e-9))
                tokens, t_log = 0, time.time()
            window_loss, window_n = 0.0, 0

    accelerator.wait_for_everyone()
    state_dict = accelerator.get_state_dict(model)  # gathers shards under FSDP
    summary = {"config": dataclasses.asdict(cfg), "num_examples": len(data), "truncated": n_trunc,
               "num_processes": accelerator.num_processes, "grad_accum": grad_accum,
               "optimizer_steps": step, "final_loss": history[-1]["loss"] if history else None,
               "wall_time_s": round(time.time() - t0, 2), "steps": history}
    if accelerator.is_main_process:
        out_dir = Path(out_dir)
        accelerator.unwrap_model(model).save_pretrained(out_dir, state_dict=state_dict)
        tokenizer.save_pretrained(out_dir)
        (out_dir / "training_log.json").write_text(json.dumps(summary, indent=1))
        log.info("saved %s (final loss %.4f, %.1fs)", out_dir, summary["final_loss"] or float("nan"),
                 summary["wall_time_s"])
    accelerator.wait_for_everyone()
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--init", required=True, help="model dir to start from")
    p.add_argument("--data", required=True, help="JSONL with instruction, input, answer")
    p.add_argument("--out", required=True)
    p.add_argument("--config-json", default="{}", help="TrainConfig overrides as JSON")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    examples = read_jsonl(a.data, "answer")  # teacher answers, schema-checked
    train(a.init, examples, a.out, TrainConfig.from_dict(json.loads(a.config_json)))


if __name__ == "__main__":
    main()
