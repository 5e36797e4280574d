"""A tiny student built locally (no hub): byte-level tokenizer + small Llama.

Bytes as tokens (no merges) keep every digit a single token, so arithmetic-style
tasks are learnable, and the tokenizer needs no training corpus.
"""
import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import (AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from .prompting import chat_template, ensure_chat_template

log = logging.getLogger(__name__)
SPECIALS = ["<s>", "</s>", "<pad>"]


def build_tokenizer(model_max_length: int = 1024) -> PreTrainedTokenizerFast:
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())  # the 256 byte symbols
    vocab = {t: i for i, t in enumerate(SPECIALS + alphabet)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        model_max_length=model_max_length, padding_side="left", chat_template=chat_template())


def build_tiny_student(out_dir, seed: int = 0, hidden_size: int = 192, num_layers: int = 3,
                       num_heads: int = 6, intermediate_size: int = 512,
                       max_length: int = 1024) -> Path:
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(max_length)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_heads,
        max_position_embeddings=max_length, tie_word_embeddings=True, **ids)
    model = LlamaForCausalLM(config)
    for k, v in ids.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    log.info("built tiny student (%.2fM params) in %s", model.num_parameters() / 1e6, out_dir)
    return out_dir


def resolve_base_model(spec: str, out_dir, seed: int = 0) -> Path:
    """`builtin:tiny` -> build locally; otherwise an HF id or local dir, copied into out_dir."""
    if spec == "builtin:tiny":
        return build_tiny_student(out_dir, seed=seed)
    import os
    offline = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(spec).is_dir()
    tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(spec, local_files_only=offline))
    tokenizer.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(spec, local_files_only=offline)
    if model.generation_config.pad_token_id is None:
        model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)
