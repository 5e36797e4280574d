"""The train and cache pools: the seed pool of iteration 1, and the update between iterations."""

from __future__ import annotations

from .artifacts import ArtifactError, read_jsonl


def load_seed_pool(path: str) -> list[dict]:
    """The user's seed instructions as pool records; errors name the file, line and field."""
    pool, seen = [], {}
    for lineno, record in enumerate(read_jsonl(path, "seed_instruction"), 1):
        if record["id"] in seen:
            raise ArtifactError(f"{path}:{lineno}: field 'id': duplicate id {record['id']!r} "
                                f"(first on line {seen[record['id']]})")
        seen[record["id"]] = lineno
        pool.append({"id": record["id"], "instruction": record["instruction"], "input": record.get("input") or "",
                     "origin": "seed", "iteration": 0, "parent_id": None, "max_similarity": None})
    if not pool:
        raise ArtifactError(f"{path}: no seed instructions")
    return pool


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
