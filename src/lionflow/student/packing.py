"""Packed micro-batches that keep examples apart: no padding computed, the same loss as padded batches.

A micro-batch of examples becomes one row: their tokens end to end, position ids restarting at 0 for
each example (so RoPE sees each at its own positions) and the bounds of the examples. The student runs
with the attention function registered here, which attends within each example only (causal SDPA per
example, GQA as transformers' SDPA does it): each example sees exactly the keys it would see alone, so
the logits, the loss and the gradients are those of the padded batch (tests/test_student.py checks
it), without computing the padding (19 % of the tokens of random SmolLM2 batches of 8,
benchmarks/train_throughput.py) and without a block-diagonal mask over the whole row (its attention
would cost the square of the row's length).

The bounds travel through the model's forward as the keyword `packed_seq_bounds` (a tuple of ints:
no device copy, no host sync per layer); transformers passes unknown keywords down to the attention
function. Any model built on transformers' AttentionInterface (LLaMA, Qwen, Mistral, Gemma, ...)
can be packed; `enable` says when one cannot, and the loop then pads.
"""
import itertools
import logging

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

from .lora import transformers_model

log = logging.getLogger("lionflow.student.packing")
ATTENTION = "lionflow_packed"
BOUNDS = "packed_seq_bounds"


def packed_attention(module, query, key, value, attention_mask, dropout=0.0, scaling=None, **kwargs):
    """Attention within each packed example (query/key/value: batch 1 x heads x row x head_dim);
    without bounds (a padded batch, generation) transformers' SDPA with its mask."""
    bounds = kwargs.pop(BOUNDS, None)
    if bounds is None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)
    out = [sdpa_attention_forward(module, query[:, :, s:e], key[:, :, s:e], value[:, :, s:e], None, dropout=dropout,
                                  scaling=scaling, is_causal=True)[0] for s, e in itertools.pairwise(bounds)]
    return torch.cat(out, dim=1), None


def packed_mask(*args, attention_mask=None, **kwargs):
    """No mask for a packed row (attention_mask None: the attention keeps examples apart by their bounds);
    SDPA's mask otherwise (a padded batch)."""
    return None if attention_mask is None else sdpa_mask(*args, attention_mask=attention_mask, **kwargs)


AttentionInterface.register(ATTENTION, packed_attention)
ALL_MASK_ATTENTION_FUNCTIONS.register(ATTENTION, packed_mask)


def enable(model) -> str | None:
    """Switch the student (before any wrapping) to the packed attention; returns the attention it had, to
    restore before saving, or None when the model cannot be packed (then it trains on padded batches)."""
    base = transformers_model(model)
    before = base.config._attn_implementation
    if not base._can_set_attn_implementation():
        log.warning("%s does not use transformers' AttentionInterface: training on padded batches",
                    type(base).__name__)
        return None
    base.set_attn_implementation(ATTENTION)
    return before


def disable(model, before: str) -> None:
    """Back to the model's own attention (what the saved checkpoint says and generation uses)."""
    transformers_model(model).set_attn_implementation(before)


def pack(examples: list[dict]) -> dict:
    """One row of the examples' tokens end to end: input_ids, labels, position_ids (from 0 in each example)
    and the examples' bounds. Each example begins with untrained prompt tokens, so no trained position
    predicts the next example's first token."""
    lengths = [len(ex["input_ids"]) for ex in examples]
    return {"input_ids": torch.tensor([[t for ex in examples for t in ex["input_ids"]]]),
            "labels": torch.tensor([[t for ex in examples for t in ex["labels"]]]),
            "position_ids": torch.cat([torch.arange(n) for n in lengths]).unsqueeze(0),
            BOUNDS: tuple(itertools.accumulate(lengths, initial=0))}
