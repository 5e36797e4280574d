"""The train and cache pools: the seed pool of iteration 1, and the update between iterations.

The pools grow to the paper's 70K instructions and beyond, so the file-to-file stages
(`write_seed_pools`, `write_next_pools`) stream records through; only the new instructions
(thousands per iteration) and the ids are held in memory.
"""

from __future__ import annotations

import os
from typing import Iterator

from .artifacts import ArtifactError, JsonlWriter, iter_jsonl


def iter_seed_pool(path: str | os.PathLike) -> Iterator[dict]:
    """The user's seed instructions as pool records, streamed; errors name the file, line and field."""
    seen: dict[str, int] = {}
    for lineno, record in iter_jsonl(path, "seed_instruction", numbered=True):
        if record["id"] in seen:
            raise ArtifactError(f"{path}:{lineno}: field 'id': duplicate id {record['id']!r} "
                                f"(first on line {seen[record['id']]})")
        seen[record["id"]] = lineno
        yield {"id": record["id"], "instruction": record["instruction"], "input": record.get("input") or "",
               "origin": "seed", "iteration": 0, "parent_id": None, "max_similarity": None}
    if not seen:
        raise ArtifactError(f"{path}: no seed instructions")


def load_seed_pool(path: str) -> list[dict]:
    """The user's seed instructions as pool records; errors name the file, line and field."""
    return list(iter_seed_pool(path))


def write_seed_pools(seeds_path, train_path, cache_path) -> int:
    """Iteration 1: train pool = cache pool = the seed pool, written in one streaming pass."""
    with JsonlWriter(train_path, "instruction") as train, JsonlWriter(cache_path, "instruction") as cache:
        for record in iter_seed_pool(seeds_path):
            train.write(record)
            cache.write(record)
    return cache.count


def next_pools(cache_pool: list[dict], new: list[dict], mode: str) -> tuple[list[dict], list[dict]]:
    """Paper: next train pool = the new instructions; next cache pool = cache pool + new.

    mode "all" trains on the whole next cache pool instead.
    """
    known = {r["id"] for r in cache_pool}
    clashes = [r["id"] for r in new if r["id"] in known]
    if clashes:
        raise ValueError(f"new instruction ids already in the cache pool: {clashes[:3]}")
    next_cache = cache_pool + new
    if mode == "new":
        return list(new), next_cache
    if mode == "all":
        return list(next_cache), next_cache
    raise ValueError(f"pools.next_train_pool must be 'new' or 'all', not {mode!r}")


def write_next_pools(cache_pool_path, new: list[dict], mode: str, train_path, cache_path) -> tuple[int, int]:
    """`next_pools` file to file, streaming the cache pool. Returns (train size, cache size)."""
    if mode not in ("new", "all"):
        raise ValueError(f"pools.next_train_pool must be 'new' or 'all', not {mode!r}")
    new_ids = {r["id"] for r in new}
    with JsonlWriter(train_path, "instruction") as train, JsonlWriter(cache_path, "instruction") as cache:
        for record in iter_jsonl(cache_pool_path, "instruction"):
            if record["id"] in new_ids:
                raise ValueError(f"new instruction ids already in the cache pool: [{record['id']!r}]")
            cache.write(record)
            if mode == "all":
                train.write(record)
        for record in new:
            cache.write(record)
            train.write(record)
    return train.count, cache.count
