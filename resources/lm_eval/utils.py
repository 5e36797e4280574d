"""Data loading for the oracle lm-eval tasks.

lm-eval resolves `!function` modules next to the YAML, so loading through here
makes the data path relative to this folder, not to the working directory.
A `data_dir` in the task metadata (simple_evaluate(metadata=...)) overrides it.
"""
from pathlib import Path

import datasets

DATA_DIR = Path(__file__).resolve().parent / "data"


def _load(name: str, data_dir=None, **_metadata):
    path = Path(data_dir or DATA_DIR) / name
    return datasets.load_dataset("json", data_files={"test": str(path)})


def load_oracle_gen(**kwargs):
    return _load("oracle_gen.jsonl", **kwargs)


def load_oracle_mc(**kwargs):
    return _load("oracle_mc.jsonl", **kwargs)


def load_oracle_levels(**kwargs):
    return _load("oracle_levels.jsonl", **kwargs)


def exact_answer(text: str) -> str:
    """The answer as the oracle tasks score it: first line, without surrounding space or a final full stop."""
    lines = text.strip().splitlines()
    return (lines[0] if lines else "").strip().removesuffix(".").rstrip()


def exact_match(doc: dict, results: list[str]) -> dict:
    return {"acc": float(exact_answer(results[0]) == exact_answer(doc["answer"]))}
