"""A tiny student built locally (no hub): byte-level tokenizer + small Llama.

Bytes as tokens (no merges) keep every digit a single token, so arithmetic-style
tasks are learnable, and the tokenizer needs no training corpus.
"""
import logging
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from .prompting import chat_template as alpaca_template
from .prompting import ensure_chat_template

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
        model_max_length=model_max_length, padding_side="left", chat_template=alpaca_template())


def build_tiny_student(out_dir, seed: int, hidden_size: int = 192, num_layers: int = 3,
                       num_heads: int = 6, intermediate_size: int = 512,
                       max_positions: int = 1024, num_kv_heads: int | None = None) -> Path:
    """A random LLaMA with the built tokenizer (num_kv_heads < num_heads: grouped-query attention)."""
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    tokenizer = build_tokenizer(max_positions)
    ids = dict(bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
               pad_token_id=tokenizer.pad_token_id)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=intermediate_size,
        num_hidden_layers=num_layers, num_attention_heads=num_heads, num_key_value_heads=num_kv_heads or num_heads,
        max_position_embeddings=max_positions, tie_word_embeddings=True, **ids)
    model = LlamaForCausalLM(config)
    for k, v in ids.items():
        setattr(model.generation_config, k, v)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    log.info("built tiny student (%.2fM params) in %s", model.num_parameters() / 1e6, out_dir)
    return out_dir


def resolve_base_model(spec: str, out_dir, seed: int, chat_template: str) -> Path:
    """`builtin:tiny` -> build locally; a local `.gguf` file -> dequantized checkpoint; otherwise an HF
    id or local dir, copied into out_dir (`save_pretrained`: model, tokenizer, chat template).

    The chat template saved here (`student.chat_template`) is the student's prompt format for the
    whole run: every later checkpoint and lm-eval read it from the tokenizer."""
    import os
    if spec == "builtin:tiny":
        build_tiny_student(out_dir, seed=seed)
        if chat_template == "auto":
            return Path(out_dir)
        tokenizer = ensure_chat_template(AutoTokenizer.from_pretrained(out_dir), chat_template)
        tokenizer.save_pretrained(out_dir)
        return Path(out_dir)
    if spec.endswith(".gguf"):
        tokenizer, model = load_gguf(spec)
    else:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or Path(spec).is_dir()
        tokenizer = AutoTokenizer.from_pretrained(spec, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(spec, local_files_only=offline)
    tokenizer = ensure_chat_template(tokenizer, chat_template)
    tokenizer.padding_side = "left"
    if model.generation_config.pad_token_id is None:
        model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return Path(out_dir)


def load_gguf(path) -> tuple:
    """(tokenizer, model) from a local GGUF file (transformers + the `gguf` package), as a plain float model.

    transformers dequantizes GGUF weights on load but flags the model as GGUF-quantized, and
    `save_pretrained` refuses such a model: rebuild the architecture from its config without the
    quantization entry and load the dequantized weights into it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"student.base_model: GGUF file {path} does not exist "
                                "(make smollm2 fetches SmolLM2-135M-Instruct under models/)")
    kw = dict(gguf_file=path.name, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(path.parent, **kw)
    loaded = AutoModelForCausalLM.from_pretrained(path.parent, dtype=torch.float32, **kw)
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict())
    model.generation_config = loaded.generation_config
    for name in ("bos_token_id", "eos_token_id"):
        if getattr(model.generation_config, name, None) is None:
            setattr(model.generation_config, name, getattr(tokenizer, name))
    log.info("loaded %s (%s, %.1fM params)", path, type(model).__name__, model.num_parameters() / 1e6)
    return tokenizer, model
