"""LoRA / QLoRA for the student's training (peft): `student.train.lora`.

Training wraps the model with LoRA adapters (only they train); at the end the adapter is saved in
`<checkpoint>/adapter/` and merged into a fresh full-precision copy of the starting model, which is
the checkpoint itself: it loads with AutoModelForCausalLM, serves with vLLM, and is what the next
iteration starts from (`student.init: previous`). `load_in_4bit` (QLoRA) loads the frozen base in
4-bit NF4 on a GPU (bitsandbytes); the merge is always into the unquantized model.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

log = logging.getLogger(__name__)
KEY = "student.train.lora"
ADAPTER_DIR = "adapter"


def transformers_model(model):
    """The transformers model itself: under peft's LoRA wrapper its base model, else `model`."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


@dataclass(frozen=True)
class LoraSettings:
    r: int
    alpha: float
    dropout: float
    target_modules: str | list[str]
    load_in_4bit: bool

    @classmethod
    def from_config(cls, lora: dict | None) -> LoraSettings | None:
        """The settings of `student.train.lora` (validated, defaults filled in), or None when it is off."""
        if not lora or not lora.get("enabled"):
            return None
        fields = ("r", "alpha", "dropout", "target_modules", "load_in_4bit")
        missing = [f for f in fields if f not in lora]
        unknown = sorted(set(lora) - {*fields, "enabled"})
        if missing or unknown:
            raise ValueError(f"{KEY}: missing keys {missing}, unknown keys {unknown} (config/schema.yaml lists them)")
        return cls(**{f: lora[f] for f in fields})

    def peft_config(self):
        from peft import LoraConfig

        return LoraConfig(r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM")


def check_4bit(settings: LoraSettings, on_gpu: bool, num_processes: int) -> None:
    """QLoRA needs a GPU, bitsandbytes and one process per job (4-bit weights are not sharded by FSDP here)."""
    if not settings.load_in_4bit:
        return
    if not on_gpu:
        raise ValueError(f"{KEY}.load_in_4bit: 4-bit loading needs a GPU (bitsandbytes) and this job trains on "
                         "the CPU; set it to false, or give the training job a GPU (student.device)")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError(f"{KEY}.load_in_4bit needs the bitsandbytes package: pip install bitsandbytes")
    if num_processes > 1:
        raise ValueError(f"{KEY}.load_in_4bit trains on one GPU per job (this job has {num_processes} processes)")


def load_for_training(init_dir, settings: LoraSettings, device) -> torch.nn.Module:
    """The starting model (4-bit NF4 for QLoRA, else float32) wrapped with trainable LoRA adapters."""
    from peft import get_peft_model, prepare_model_for_kbit_training
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    if settings.load_in_4bit:
        quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                   bnb_4bit_compute_dtype=torch.bfloat16)
        model = AutoModelForCausalLM.from_pretrained(init_dir, quantization_config=quant, device_map={"": device})
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    return get_peft_model(model, settings.peft_config())


def save_merged(peft_model, state_dict, init_dir, out_dir) -> Path:
    """Save the adapter in out_dir/adapter/, then merge it into a fresh float32 copy of init_dir and
    save that as the checkpoint (`state_dict`: the full, gathered state of the trained peft model)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out_dir, adapter = Path(out_dir), Path(out_dir) / ADAPTER_DIR
    peft_model.save_pretrained(adapter, state_dict=state_dict)
    base = AutoModelForCausalLM.from_pretrained(init_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    merged.save_pretrained(out_dir)
    return adapter
