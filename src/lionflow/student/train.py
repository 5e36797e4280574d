"""Instruction-tune the student on (instruction, input, answer) examples.

A plain accelerate loop (not HF Trainer), in the manner of nanoGPT: `train()` at the bottom
reads as the recipe - setup, load the student, encode the data, optimizer and schedule, resume,
one epoch at a time, save - and each step is a short function above it. Loss on response tokens
only; the loss reaches the host only when a line is logged. The same file runs as one CPU
process, under `torchrun`/`accelerate launch` with several CPU processes (gloo), and on GPUs
(`accelerate launch --config_file config/accelerate/gpus.yaml`, one process per GPU). Under such
a launch the student is sharded with FSDP2 (`fsdp`, see sharding.py: the same code on CPU and GPU).

Preemption-safe: every `checkpoint_every_steps` optimizer steps the full training state
(model, optimizer, scheduler, RNG, data position) goes to `state_dir`, sharded, through
torch.distributed.checkpoint; a rerun after a kill, preemption or requeue resumes there (with
any process count) and ends with the same optimizer steps as an uninterrupted run. The data
order is a pure function of (seed, epoch), so resuming mid-epoch replays exactly the batches
that were not yet trained. The checkpoint is gathered to a full state dict and written into a
temporary folder renamed into place: a killed save leaves no checkpoint behind.

LoRA (`lora`, see lora.py): only the adapters train; the checkpoint is the merged model, the
adapter is saved beside it in `<out>/adapter/`. training_log.json records the trainable and
total parameters and the process's peak memory either way.
"""
import argparse
import contextlib
import dataclasses
import inspect
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

from ..artifacts import atomic_dir, atomic_write, read_jsonl
from . import lora as lora_
from . import packing as packing_
from . import sharding
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
    bf16: bool  # bf16 autocast on a GPU (on a CPU only with cpu_bf16)
    max_grad_norm: float
    checkpoint_every_steps: int  # resumable state every N optimizer steps (0: never)
    fsdp: bool  # shard with FSDP2 under a multi-process launch (false: DDP)
    lora: dict | None  # student.train.lora (None or enabled: false - full fine-tuning)
    cpu_bf16: bool  # bf16 autocast on a CPU with native bf16 too (AVX512-BF16/AMX); see the schema
    packing: bool  # each micro-batch packed into one row, examples kept apart (packing.py): no padding computed

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


def projects_trained_positions_only(model: torch.nn.Module) -> bool:
    """Whether the model's forward takes a boolean `logits_to_keep` mask (transformers' own causal LMs):
    then the LM head projects only the positions whose next token is trained (see `loss_of`)."""
    base = lora_.transformers_model(model)
    return "slice_logits_to_keep" in getattr(inspect.unwrap(type(base).forward), "__globals__", {})


def loss_of(model, batch: dict, trained_positions_only: bool) -> torch.Tensor:
    """Mean cross-entropy over the batch's trained (response) tokens, as the model's own loss computes it.

    With `trained_positions_only` the LM head (576 x 49,152 for SmolLM2: a fifth of its FLOPs per token)
    projects only the positions whose next token is trained, not the prompt's and the padding's: the
    same loss without the logits of the untrained positions (their time and memory)."""
    if not trained_positions_only:
        return model(**batch).loss
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != -100
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}, logits_to_keep=keep).logits
    return torch.nn.functional.cross_entropy(logits.float(), labels[:, 1:][keep[:, :-1]])


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
    """This process's micro-batches (example indices) of an epoch: random batches, a pure function of
    (seed, epoch), so a resumed run replays them. In the shuffled order, an effective batch holds the same
    examples whatever the number of processes (1 x 2 micro-batches = 2 processes x 1). Every process gets
    the same number of batches (the permutation wraps around, as in DistributedSampler), so no process waits
    on a collective the others never reach. Padding is not computed: each micro-batch is packed (packing.py).

    (Length-grouped batches, tried before packing, halved the padding but held similar tasks together:
    the trained model's loss was 0.79 against 0.52 with random batches, benchmarks/train_throughput.py.)
    """
    gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
    order = torch.randperm(n_examples, generator=gen).tolist()
    per_process = math.ceil(n_examples / world)
    mine = (order * math.ceil(per_process * world / n_examples))[:per_process * world][rank::world]
    bs = cfg.per_device_batch_size
    return [mine[i:i + bs] for i in range(0, len(mine), bs)]


@dataclass
class Setup:
    """Where and how this process trains: the accelerator (its processes, device, precision), whether the
    student is sharded (FSDP2) and the gradient accumulation that makes up the effective batch."""
    accelerator: Accelerator
    on_gpu: bool
    bf16: bool
    grad_accum: int
    sharded: bool
    state_memory: dict | None = None  # parameters + gradients + optimizer state per process, at the first step
    attention: str | None = None  # with packing: the model's own attention, restored before saving


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX), where bf16 autocast pays."""
    return torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


def setup(cfg: TrainConfig, device: str) -> Setup:
    """One process per GPU (or CPU processes over gloo); effective batch = per device x processes x accumulation."""
    on_gpu = resolve_device(device).startswith("cuda")
    bf16 = cfg.bf16 and (on_gpu or (cfg.cpu_bf16 and cpu_has_bf16()))
    # cpu=True without a GPU (or with student.device: cpu): several processes then train over gloo.
    accelerator = Accelerator(mixed_precision="bf16" if bf16 else "no", cpu=not on_gpu)
    seed_everything(cfg.seed)
    per_step = cfg.per_device_batch_size * accelerator.num_processes
    if cfg.effective_batch_size % per_step:
        raise ValueError(f"student.train.effective_batch_size={cfg.effective_batch_size} is not a multiple of "
                         f"student.train.per_device_batch_size={cfg.per_device_batch_size} x {accelerator.num_processes} "
                         "processes (the GPUs of the job): change one of them")
    return Setup(accelerator, on_gpu, bf16, cfg.effective_batch_size // per_step, sharding.wanted(cfg.fsdp))


def load_student(init_dir, cfg: TrainConfig, run: Setup):
    """(tokenizer, model, LoRA settings or None, parameter counts): the whole model, or its LoRA adapters."""
    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(init_dir))
    lora = lora_.LoraSettings.from_config(cfg.lora)
    if lora:
        lora_.check_4bit(lora, run.on_gpu, run.accelerator.num_processes)
        if lora.load_in_4bit and run.sharded:
            raise ValueError(f"{lora_.KEY}.load_in_4bit: FSDP2 does not shard 4-bit weights; set {sharding.KEY}: "
                             "false for QLoRA (one GPU per job)")
        model = lora_.load_for_training(init_dir, lora, run.accelerator.device)
    else:
        model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    counts = parameter_counts(model)
    if cfg.packing:
        run.attention = packing_.enable(model)
    log.info("%s: %d trainable parameters of %d (%.2f%%)", "LoRA" if lora else "full fine-tuning",
             counts["trainable_parameters"], counts["total_parameters"], counts["trainable_percent"])
    return tokenizer, model, lora, counts


def encode_examples(tokenizer, examples: list[dict], max_length: int) -> tuple[list[dict], int, int]:
    """Token ids and labels of the examples with an answer token left to train on, how many were
    truncated, and how many were excluded (their prompt fills max_length: a paid answer with no token
    trained, and a NaN loss in a batch of only such examples)."""
    encoded = [encode_example(tokenizer, ex, max_length) for ex in examples]
    n_trunc = sum(t for _, t in encoded)
    if n_trunc:
        log.warning("truncated %d/%d examples to max_length=%d", n_trunc, len(encoded), max_length)
    kept = [f for f, _ in encoded if any(label != -100 for label in f["labels"])]
    if len(kept) < len(encoded):
        log.warning("excluded %d/%d examples: their prompt fills student.train.max_length=%d, no answer token "
                    "left to train on", len(encoded) - len(kept), len(encoded), max_length)
    if not kept:
        raise ValueError(f"no training example left: {len(encoded)} given, {len(encoded) - len(kept)} of them with "
                         f"no answer token within student.train.max_length={max_length}")
    return kept, n_trunc, len(encoded) - len(kept)


def optimization(model, cfg: TrainConfig, run: Setup, n_examples: int):
    """(model, AdamW, LR schedule, optimizer steps in all): sharded with FSDP2, else prepared by the accelerator."""
    if run.sharded:
        model = sharding.shard(model, run.accelerator.device, run.bf16)
    # fused: one kernel over all parameters; torch's default on a CPU is a Python loop over them, ~6x slower
    # there and most of a full fine-tuning step on SmolLM2-135M (benchmarks/train_throughput.py)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay, fused=True)
    if not run.sharded:
        model, optimizer = run.accelerator.prepare(model, optimizer)  # DDP over several processes
    acc = run.accelerator
    micro_per_epoch = len(epoch_batches(n_examples, 0, cfg, acc.process_index, acc.num_processes))
    total_steps = math.ceil(micro_per_epoch / run.grad_accum) * cfg.epochs
    # Stepped by hand once per optimizer step, so its count does not depend on the process count.
    scheduler = get_scheduler(cfg.lr_scheduler, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * total_steps),
                              num_training_steps=total_steps)
    return model, optimizer, scheduler, total_steps


def resume(model, optimizer, scheduler, run: Setup, state_dir: Path | None) -> dict:
    """The saved training state, loaded into this run's objects: {step, epoch, micro}; zeros when none."""
    # "old" is the previous state during the instant save_state swaps it for the new one.
    saved = [d for d in ("latest", "old") if state_dir and (state_dir / d / "progress.json").exists()]
    if not saved:
        return {"step": 0, "epoch": 0, "micro": 0, "resumed": False}
    progress = sharding.load_state(run.accelerator, model, optimizer, scheduler, state_dir / saved[0])
    # the position in optimizer steps: this run's micro-batches (another process count has other ones)
    progress["micro"] = progress["epoch_step"] * run.grad_accum
    log.info("resuming from step %d (epoch %d, micro-batch %d) in %s", progress["step"], progress["epoch"],
             progress["micro"], state_dir)
    return {**progress, "resumed": True}


class LossLog:
    """Per optimizer step losses, kept on the device and brought to the host only when a line is logged
    (no host sync per step); `history` holds them as {step, epoch, loss, lr}."""

    def __init__(self, total_steps: int, log_every: int):
        self.total_steps, self.log_every = total_steps, log_every
        self.history: list[dict] = []
        self.pending: list[tuple[dict, torch.Tensor]] = []
        self.tokens, self.t_log = 0, time.time()
        self.trained_tokens = self.computed_tokens = 0  # this run's tokens, and its tokens with the padding

    def step(self, step: int, epoch: int, loss: torch.Tensor, lr: float, tokens: int, computed: int):
        self.pending.append(({"step": step, "epoch": epoch, "lr": lr}, loss))
        self.tokens += tokens
        self.trained_tokens, self.computed_tokens = self.trained_tokens + tokens, self.computed_tokens + computed
        if step % self.log_every == 0 or step == self.total_steps:
            self.flush()
            last, dt = self.history[-1], time.time() - self.t_log
            log.info("step %d/%d epoch %d loss %.4f lr %.2e tok/s %.0f", step, self.total_steps, epoch,
                     last["loss"], last["lr"], self.tokens / max(dt, 1e-9))
            self.tokens, self.t_log = 0, time.time()

    def flush(self):
        if self.pending:
            losses = torch.stack([loss for _, loss in self.pending])
            if torch.distributed.is_initialized():  # the whole batch's loss: the mean over processes
                torch.distributed.all_reduce(losses)
                losses /= torch.distributed.get_world_size()
            losses = losses.tolist()  # one sync for the window
            self.history += [{**row, "loss": loss} for (row, _), loss in zip(self.pending, losses)]
            self.pending = []


def train_epoch(model, optimizer, scheduler, data: list[dict], pad_id: int, cfg: TrainConfig, run: Setup,
                epoch: int, first_micro: int, step: int, losses: LossLog, state_dir: Path | None) -> int:
    """One epoch from micro-batch `first_micro` (a resumed run's position); returns the optimizer step reached."""
    acc, grad_accum = run.accelerator, run.grad_accum
    trained_only = projects_trained_positions_only(acc.unwrap_model(model))
    batches = epoch_batches(len(data), epoch, cfg, acc.process_index, acc.num_processes)
    window_loss, window_n, tokens, computed = 0.0, 0, 0, 0
    for i in range(first_micro, len(batches)):
        examples = [data[j] for j in batches[i]]
        batch = packing_.pack(examples) if run.attention else collate(examples, pad_id)
        batch = {k: v.to(acc.device) if torch.is_tensor(v) else v for k, v in batch.items()}
        last_micro = (i + 1) % grad_accum == 0 or i + 1 == len(batches)
        # the epoch's last window may be short: average over its real size
        window = min(grad_accum, len(batches) - i // grad_accum * grad_accum)
        # DDP: no gradient all-reduce on intermediate micro-batches (FSDP2 reduce-scatters every one: gradients stay sharded)
        with contextlib.nullcontext() if last_micro or run.sharded else acc.no_sync(model):
            loss = loss_of(model, batch, trained_only)
            acc.backward(loss / window)
        window_loss, window_n = window_loss + loss.detach(), window_n + 1
        tokens += sum(len(ex["input_ids"]) for ex in examples) * acc.num_processes
        computed += batch["input_ids"].numel() * acc.num_processes   # with the padding, if any
        if not last_micro:
            continue
        if cfg.max_grad_norm:
            acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        if run.state_memory is None:
            run.state_memory = sharding.state_memory(model, optimizer)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        losses.step(step, epoch, window_loss / window_n, scheduler.get_last_lr()[0], tokens, computed)
        window_loss, window_n, tokens, computed = 0.0, 0, 0, 0
        if state_dir and cfg.checkpoint_every_steps and step % cfg.checkpoint_every_steps == 0 \
                and step < losses.total_steps:
            sharding.save_state(acc, model, optimizer, scheduler, state_dir,
                                {"step": step, "epoch": epoch, "epoch_step": math.ceil((i + 1) / grad_accum)})
    return step


def save(model, tokenizer, run: Setup, init_dir, out_dir, lora, summary: dict, state_dir: Path | None) -> dict:
    """The checkpoint (LoRA: the merged model, the adapter in out/adapter/), the tokenizer and training_log.json."""
    acc = run.accelerator
    acc.wait_for_everyone()
    if run.attention:
        packing_.disable(acc.unwrap_model(model), run.attention)
    summary = {**summary, **peak_memory(str(acc.device))}  # the training loop's peak (model, optimizer, activations)
    # the full weights on process 0 (FSDP2: gathered from the shards)
    state_dict = sharding.full_state_dict(model) if run.sharded else acc.get_state_dict(model)
    if acc.is_main_process:
        with atomic_dir(out_dir, single_writer=True) as tmp:  # renamed into place once complete
            if lora:
                lora_.save_merged(acc.unwrap_model(model), state_dict, init_dir, tmp)
            else:
                acc.unwrap_model(model).save_pretrained(tmp, state_dict=state_dict)
            tokenizer.save_pretrained(tmp)
            # the job's peak: training, gathering, saving and (LoRA) merging
            # (VmHWM is read from per-thread counters that Linux syncs lazily: a later read can come out 0.1 MiB lower)
            job = peak_memory(str(acc.device))
            summary = {**summary, **{f"job_{k}": None if v is None else max(v, summary[k]) for k, v in job.items()}}
            atomic_write(tmp / "training_log.json", json.dumps(summary, indent=1))
        log.info("saved %s (final loss %.4f, %.1fs)", out_dir, summary["final_loss"] or float("nan"),
                 summary["wall_time_s"])
        if state_dir:
            shutil.rmtree(state_dir, ignore_errors=True)  # done: nothing left to resume
    acc.wait_for_everyone()
    return summary


def train(init_dir, examples: list[dict], out_dir, cfg: TrainConfig, state_dir=None, *, device: str,
          log_every: int = 10) -> dict:
    """Fine-tune the student in init_dir on `examples` (schema `answer`) into out_dir; returns the training log."""
    t0 = time.time()
    state_dir = Path(state_dir) if state_dir else None
    run = setup(cfg, device)
    tokenizer, model, lora, counts = load_student(init_dir, cfg, run)
    data, n_trunc, n_excluded = encode_examples(tokenizer, examples, cfg.max_length)
    model, optimizer, scheduler, total_steps = optimization(model, cfg, run, len(data))
    layout = sharding.layout(model, run.bf16)
    progress = resume(model, optimizer, scheduler, run, state_dir)
    log.info("%d examples, %d epochs, %d optimizer steps (batch %d x %d proc x %d accum), %s", len(data), cfg.epochs,
             total_steps, cfg.per_device_batch_size, run.accelerator.num_processes, run.grad_accum,
             "bf16" if run.bf16 else "fp32")

    model.train()
    losses, step, t_loop = LossLog(total_steps, log_every), progress["step"], time.time()
    for epoch in range(progress["epoch"], cfg.epochs):
        first_micro = progress["micro"] if epoch == progress["epoch"] else 0
        step = train_epoch(model, optimizer, scheduler, data, tokenizer.pad_token_id, cfg, run, epoch, first_micro,
                           step, losses, state_dir)
    losses.flush()

    summary = {"config": dataclasses.asdict(cfg), "num_examples": len(data), "truncated": n_trunc,
               "excluded_no_answer_token": n_excluded,
               "num_processes": run.accelerator.num_processes, "grad_accum": run.grad_accum, "optimizer_steps": step,
               "resumed_from_step": progress["step"] if progress["resumed"] else None,
               "final_loss": losses.history[-1]["loss"] if losses.history else None,
               "wall_time_s": round(time.time() - t0, 2), "train_loop_s": round(time.time() - t_loop, 2),
               "precision": "bf16" if run.bf16 else "fp32", "packed": bool(run.attention),
               "trained_tokens": losses.trained_tokens,
               "computed_tokens": losses.computed_tokens, "method": "lora" if lora else "full", **counts,
               "sharding": layout, "state_memory": run.state_memory, "steps": losses.history}
    return save(model, tokenizer, run, init_dir, out_dir, lora, summary, state_dir)


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
