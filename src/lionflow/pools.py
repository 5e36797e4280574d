"""The train and cache pools: the seed pool of iteration 1, and the update between iterations.

The pools grow to the paper's 70K instructions and beyond, so both stages are lazy polars
queries written with `frames.write_frames` (streamed, flat memory, both pools or neither); the inputs pass the JSON
Schema record by record first, so errors name the file, line and field.
"""

from __future__ import annotations

import os

import polars as pl

from .artifacts import ArtifactError, iter_jsonl
from .failures import check_rows
from .frames import read_frame, scan_frame, write_frames

POOL_MODES = ("new", "all")
POOLS = ("train", "cache")


def check_seed_file(path: str | os.PathLike) -> int:
    """Every line of the user's seed file: its schema and a unique id; errors name the file, line and field.
    Returns the number of seed instructions."""
    seen: dict[str, int] = {}
    for lineno, record in iter_jsonl(path, "seed_instruction", numbered=True):
        if record["id"] in seen:
            raise ArtifactError(f"{path}:{lineno}: field 'id': duplicate id {record['id']!r} "
                                f"(first on line {seen[record['id']]})")
        seen[record["id"]] = lineno
    if not seen:
        raise ArtifactError(f"{path}: no seed instructions")
    return len(seen)


def seed_pool(seeds_path: str | os.PathLike) -> pl.LazyFrame:
    """The seed file as a lazy pool frame (schema `instruction`), after checking every line."""
    check_seed_file(seeds_path)
    return _seed_frame(seeds_path)


def _seed_frame(seeds_path) -> pl.LazyFrame:
    return pl.scan_ndjson(seeds_path, schema={"id": pl.String, "instruction": pl.String, "input": pl.String}) \
        .select("id", "instruction", pl.col("input").fill_null(""), origin=pl.lit("seed"), iteration=pl.lit(0),
                parent_id=pl.lit(None, pl.String), max_similarity=pl.lit(None, pl.Float64),
                parent_pool=pl.lit(None, pl.String), parent_similarity=pl.lit(None, pl.Float64))


def load_seed_pool(path: str | os.PathLike) -> list[dict]:
    """The user's seed instructions as pool records; errors name the file, line and field."""
    return seed_pool(path).collect().to_dicts()


def write_seed_pools(seeds_path, train_path, cache_path) -> int:
    """Iteration 1: train pool = cache pool = the seed pool."""
    n_seeds, pool = check_seed_file(seeds_path), _seed_frame(seeds_path)
    check = lambda counts: [check_rows(f"init_pools ({name} pool)", n_seeds, n, 0) for name, n in zip(POOLS, counts)]
    return write_frames([(pool, train_path, "instruction"), (pool, cache_path, "instruction")], check)[1]


def next_pools(cache_pool: pl.LazyFrame, new: pl.DataFrame, mode: str) -> tuple[pl.LazyFrame, pl.LazyFrame]:
    """Paper: next train pool = the new instructions; next cache pool = cache pool + new.

    mode "all" trains on the whole next cache pool instead. Ids must stay unique.
    """
    if mode not in POOL_MODES:
        raise ValueError(f"pools.next_train_pool must be 'new' or 'all', not {mode!r}")
    repeated = new.filter(pl.col("id").is_duplicated())["id"].unique(maintain_order=True).head(3).to_list()
    if repeated:
        raise ValueError(f"new instruction ids given twice: {repeated}")
    clashes = cache_pool.join(new.lazy(), on="id", how="semi").select("id").head(3).collect(engine="streaming")
    if clashes.height:
        raise ValueError(f"new instruction ids already in the cache pool: {clashes['id'].to_list()}")
    next_cache = pl.concat([cache_pool, new.lazy()])
    return (new.lazy() if mode == "new" else next_cache), next_cache


def write_next_pools(cache_pool_path, new_paths: list, mode: str, train_path, cache_path) -> tuple[int, int]:
    """`next_pools` file to file: the cache pool streams, the new instructions (thousands) are read whole.

    Returns (train size, cache size)."""
    new = pl.concat([read_frame(p, "instruction") for p in new_paths])
    cache_pool = scan_frame(cache_pool_path, "instruction")
    train, cache = next_pools(cache_pool, new, mode)
    # next cache = cache + new; next train = new (mode "new") or the next cache (mode "all")
    n_cache = cache_pool.select(pl.len()).collect(engine="streaming").item() + new.height
    expected = {"train": new.height if mode == "new" else n_cache, "cache": n_cache}
    check = lambda counts: [check_rows(f"update_pools ({name} pool)", expected[name], n, 0)
                            for name, n in zip(POOLS, counts)]
    n_train, n_cache = write_frames([(train, train_path, "instruction"), (cache, cache_path, "instruction")], check)
    return n_train, n_cache
