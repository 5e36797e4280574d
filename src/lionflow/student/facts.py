"""What the preflight needs to know about the base student, read from the model once.

The preflight (run when the workflow is parsed, by `snakemake -n` too) needs the base model's context
length and its tokenizer (to count seed instructions in tokens). Reading them from a GGUF file parses
its whole tokenizer (seconds for SmolLM2's 98 MB file), and an experiment parses one run per arm and
seed: so each model file is read at most once per process (`functools.cache`) and its tokenizer is
kept under `.cache/lionflow/model-facts/<key>/`, the key made of the file's path, size and
modification time (a replaced model is read again), with its context length in `facts.json`.
Later parses, and every arm, read those (milliseconds, and neither torch nor transformers is
imported).
"""
from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path

from ..artifacts import atomic_dir

CACHE_DIR = Path(".cache/lionflow/model-facts")
FACTS = "facts.json"


def base_model_context(spec: str) -> int | None:
    """Context length of a local base model (directory or .gguf), None when unknown (builtin, hub id)."""
    path = Path(spec)
    if spec.endswith(".gguf") and path.is_file():
        return json.loads((_gguf_facts(path.resolve(), _key(path)) / FACTS).read_text())["context_length"]
    if path.is_dir() and (path / "config.json").is_file():
        return json.loads((path / "config.json").read_text()).get("max_position_embeddings")
    return None


def _key(path: Path) -> str:
    stat = path.stat()
    return hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:20]


def read_gguf(path: Path, into: Path) -> None:
    """The one read of a GGUF file: its tokenizer (tokenizer.json and config) and its context length
    (`<arch>.context_length` in the metadata header) saved into `into`."""
    from transformers import AutoTokenizer
    from transformers.integrations.gguf import read_gguf_metadata

    AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name).save_pretrained(into)
    metadata, _ = read_gguf_metadata(str(path))
    context = next((int(v) for k, v in metadata.items() if k.endswith(".context_length")), None)
    (into / FACTS).write_text(json.dumps({"context_length": context}))


def tokenizer_file(spec: str) -> Path | None:
    """A `tokenizer.json` holding the tokenizer of base model `spec` (a directory with one, or a GGUF
    file's, kept in CACHE_DIR), None for a model whose tokenizer is not a local file (builtin, hub id)."""
    path = Path(spec)
    if path.is_dir():
        return path / "tokenizer.json" if (path / "tokenizer.json").is_file() else None
    if spec.endswith(".gguf") and path.is_file():
        return _gguf_facts(path.resolve(), _key(path)) / "tokenizer.json"
    return None


@functools.cache
def _gguf_facts(path: Path, key: str) -> Path:
    """The directory in CACHE_DIR that keeps what `read_gguf` read from `path` (read now if not yet)."""
    kept = CACHE_DIR / key
    if not (kept / FACTS).is_file():
        try:
            with atomic_dir(kept) as tmp:
                read_gguf(path, tmp)
        except OSError:  # another parse kept it first
            if not (kept / FACTS).is_file():
                raise
    return kept


@functools.cache
def token_counter(tokenizer_json: Path):
    """text -> number of tokens (special tokens included, as the student's tokenizer counts them)."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(tokenizer_json))
    return lambda text: len(tokenizer.encode(text).ids)
