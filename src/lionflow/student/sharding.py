"""FSDP2 for the student's training, and its resumable state through torch.distributed.checkpoint.

Sharding (`student.train.fsdp`, on whenever training runs under a multi-process launcher): each decoder
layer (the model's `_no_split_modules`, LlamaDecoderLayer for LLaMA) and then the root are
`fully_shard`-ed over all processes, so every parameter becomes a DTensor of which each of N
processes holds 1/N of the rows; gradients and AdamW state follow the parameters. The same calls
run on CPU processes over gloo (CI, float32) and on GPUs over NCCL (bf16 compute, float32 gradient
reduction and master weights). accelerate only launches the processes: its own FSDP plugin is never
applied on CPU (accelerate 1.15 reaches it only for multi-accelerator types), so lionflow wraps with
torch's API itself and the CPU run in CI is the GPU run's code.

Resumable state (`save_state` / `load_state`): model and optimizer through torch.distributed.checkpoint
(each process writes its own shards; LoRA: only the adapters and their optimizer state), the LR
schedule, every process's RNG, and progress.json last. torch.distributed.checkpoint reshards on load,
so a state saved by N processes resumes with M (sharded, replicated or one plain process).
"""
from __future__ import annotations

import json
import logging
import random
import shutil
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_state_dict,
)
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard
from torch.distributed.tensor import DTensor

log = logging.getLogger(__name__)
KEY = "student.train.fsdp"
# LoRA: the frozen base comes back from the starting model; only what trains is saved.
STATE_OPTIONS = StateDictOptions(ignore_frozen_params=True)


def wanted(fsdp: bool) -> bool:
    """Shard when configured and a process group exists (a multi-process launch; on a GPU also one process)."""
    return fsdp and dist.is_available() and dist.is_initialized()


def layer_classes(model: torch.nn.Module) -> set[str]:
    """The decoder layer classes of a Hugging Face model (also inside a peft model): its `_no_split_modules`."""
    for module in model.modules():
        if getattr(module, "_no_split_modules", None):
            return set(module._no_split_modules)
    raise ValueError(f"{KEY}: {type(model).__name__} names no decoder layer class (_no_split_modules) to shard by; "
                     f"set {KEY}: false to train it replicated (DDP)")


def shard(model: torch.nn.Module, device: torch.device, bf16: bool) -> torch.nn.Module:
    """fully_shard each decoder layer, then the root (embeddings, final norm, tied head), over all processes."""
    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    mp = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else MixedPrecisionPolicy()
    classes = layer_classes(model)
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    if not layers:
        raise ValueError(f"{KEY}: {type(model).__name__} has no module of its _no_split_modules {sorted(classes)} to "
                         f"shard by; set {KEY}: false to train it replicated (DDP)")
    for layer in layers:
        fully_shard(layer, mesh=mesh, mp_policy=mp)
    fully_shard(model, mesh=mesh, mp_policy=mp)
    log.info("FSDP2: %d x %s and the root sharded over %d processes (%s)", len(layers), "/".join(sorted(classes)),
             dist.get_world_size(), "bf16 compute, fp32 reduce" if bf16 else "fp32")
    return model


def is_sharded(model: torch.nn.Module) -> bool:
    return isinstance(model, FSDPModule)


def _local(t: torch.Tensor) -> torch.Tensor:
    return t.to_local() if isinstance(t, DTensor) else t


def _all_ranks(obj) -> list:
    """obj of every process, in rank order (just [obj] without a process group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def layout(model: torch.nn.Module, bf16: bool) -> dict:
    """What each process holds of the parameters (training_log.json's `sharding`): a collective call."""
    params = [p for _, p in model.named_parameters()]
    mine = {"dtensor_parameters": sum(isinstance(p, DTensor) for p in params),
            "local_numel": sum(_local(p).numel() for p in params),
            "rows_fraction": [min((_local(p).shape[0] / p.shape[0] for p in params), default=0),
                              max((_local(p).shape[0] / p.shape[0] for p in params), default=0)]}
    ranks = _all_ranks(mine)
    if not is_sharded(model):
        return {"method": "ddp" if len(ranks) > 1 else "none", "processes": len(ranks)}
    classes = layer_classes(model)
    return {"method": "fsdp2", "processes": len(ranks), "layer_classes": sorted(classes),
            "sharded_modules": sum(isinstance(m, FSDPModule) for m in model.modules()),
            "parameters": len(params), "total_numel": sum(p.numel() for p in params),
            "placements": sorted({str(p.placements) for p in params if isinstance(p, DTensor)}),
            "mixed_precision": "bf16 parameters in compute, fp32 reduction and master weights" if bf16 else "fp32",
            "ranks": ranks}


def state_memory(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """MiB of parameters, gradients and optimizer state each process holds (the local shards under FSDP2),
    and on a GPU the allocator's figure; a collective call, made after an optimizer step."""
    mib = 2 ** -20
    params = list(model.parameters())
    mine = {"parameters_mib": sum(_local(p).numel() * p.element_size() for p in params) * mib,
            "gradients_mib": sum(_local(p.grad).numel() * p.grad.element_size() for p in params
                                 if p.grad is not None) * mib,
            "optimizer_mib": sum(_local(v).numel() * v.element_size() for s in optimizer.state.values()
                                 for v in s.values() if torch.is_tensor(v)) * mib}
    mine["total_mib"] = sum(mine.values())
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        mine["gpu_allocated_mib"] = torch.cuda.memory_allocated() * mib
    ranks = [{k: round(v, 2) for k, v in r.items()} for r in _all_ranks(mine)]
    return {"per_rank": ranks, "max_total_mib": max(r["total_mib"] for r in ranks)}


def full_state_dict(model: torch.nn.Module) -> dict:
    """The whole model's weights gathered on the CPU of process 0 (empty elsewhere): a collective call.

    A tied weight (SmolLM2's output head is its embedding) comes back as a copy under each name; only the
    first name is kept, as in the model's own state dict, so save_pretrained writes it once."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    first: dict[int, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(p), name) != name:
            state.pop(name, None)
    return state


def _rng_state() -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def _set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])


def save_state(accelerator, model, optimizer, scheduler, state_dir: Path, progress: dict) -> None:
    """Atomically replace state_dir/latest with the current training state (a collective call).

    Every process writes its shards into state_dir/tmp-<step>; process 0 then adds the schedule and
    progress.json and renames the folder to `latest` (the previous one is `old` for that instant).
    """
    rank, world = accelerator.process_index, accelerator.num_processes
    tmp, latest = state_dir / f"tmp-{progress['step']}", state_dir / "latest"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
    accelerator.wait_for_everyone()
    model_sd, optim_sd = get_state_dict(model, optimizer, options=STATE_OPTIONS)
    dcp.save({"model": model_sd, "optimizer": optim_sd}, checkpoint_id=tmp)
    torch.save(_rng_state(), tmp / f"rng-{rank}.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        (tmp / "progress.json").write_text(json.dumps({**progress, "num_processes": world}))
        old = state_dir / "old"
        if latest.exists():
            latest.rename(old)
        tmp.rename(latest)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def load_state(accelerator, model, optimizer, scheduler, path: Path) -> dict:
    """Load a state saved by save_state (by any number of processes) into this run's objects; its progress."""
    if not (path / ".metadata").exists():
        raise RuntimeError(f"{path} holds no torch.distributed.checkpoint state (an earlier lionflow wrote it with "
                           f"accelerate's save_state): delete {path.parent} to train from the start")
    progress = json.loads((path / "progress.json").read_text())
    model_sd, optim_sd = get_state_dict(model, optimizer, options=STATE_OPTIONS)
    state = {"model": model_sd, "optimizer": optim_sd}
    dcp.load(state, checkpoint_id=path)  # reshards: any process count, sharded or not
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"],
                   options=StateDictOptions(ignore_frozen_params=True, strict=False))
    scheduler.load_state_dict(torch.load(path / "scheduler.pt", weights_only=False))
    rng = path / f"rng-{accelerator.process_index}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    saved_by = progress.get("num_processes", accelerator.num_processes)
    if saved_by != accelerator.num_processes:
        log.warning("state saved by %d processes, resumed by %d: weights and optimizer state resharded; the "
                    "data position is kept in optimizer steps; processes without a saved RNG state keep their seed",
                    saved_by, accelerator.num_processes)
    return progress
