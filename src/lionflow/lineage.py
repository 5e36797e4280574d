"""Lineage: where an instruction came from, back to its seed.

Every generated instruction records its parent (`parent_id`: the instruction of the cache pool it
was modelled on), `iteration`, `origin` (the template: hard or easy), `parent_pool` (drawn from
the referee's hard or easy split, or the whole cache pool under generation.strategy uniform) and
`parent_similarity` (ROUGE-L F with the parent). A run's lineage index is its seed pool
(iter1/cache_pool.jsonl) plus every iteration's new instructions; ids are unique across them
(update_pools checks it).

A seed's family is the oracle task family its instruction parses as (the demo world), else
`other`. Usage: python -m lionflow.lineage results/<run> <instruction id>
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from . import layout
from .artifacts import iter_jsonl
from .oracle.tasks import parse_problem

OTHER = "other"


def index_files(paths: Iterable) -> dict[str, dict]:
    """id -> pool record (schema `instruction`) of the given files: the seed pool and the new instructions."""
    index: dict[str, dict] = {}
    for path in paths:
        for record in iter_jsonl(path, "instruction"):
            index.setdefault(record["id"], record)
    return index


def run_files(run_dir) -> list[Path]:
    """A run's seed pool and every iteration's new instructions, in iteration order."""
    iterations = layout.iteration_dirs(run_dir)
    if not iterations:
        raise FileNotFoundError(f"{run_dir}: no iter<k>/ folders (a results/<run> directory?)")
    seeds = iterations[0][1] / "cache_pool.jsonl"
    return [seeds] + [p / f"new_{o}.jsonl" for _, p in iterations for o in ("hard", "easy")
                      if (p / f"new_{o}.jsonl").is_file()]


def chain(index: dict[str, dict], instruction_id: str) -> list[dict]:
    """The instruction and its ancestors, ending with a seed (parent_id null)."""
    if instruction_id not in index:
        raise KeyError(f"no instruction {instruction_id!r} in the run's seed pool or new instructions")
    out = [index[instruction_id]]
    while out[-1]["parent_id"] is not None:
        parent = out[-1]["parent_id"]
        if parent not in index:
            raise KeyError(f"{out[-1]['id']}: parent {parent!r} is not in the run's seed pool or new instructions")
        if any(r["id"] == parent for r in out):
            raise ValueError(f"{instruction_id}: the parent chain loops at {parent!r}")
        out.append(index[parent])
    return out


def family_level(record: dict) -> tuple[str, int | None]:
    """The oracle task family and level an instruction parses as; (`other`, None) if it does not."""
    problem = parse_problem(record["instruction"], record["input"])
    return (problem.family, problem.level) if problem else (OTHER, None)


def seed_family(seed: dict) -> str:
    return family_level(seed)[0]


def families_of(ids: Iterable[str], index: dict[str, dict]) -> Counter:
    """How many of the instructions `ids` descend from each seed family."""
    return Counter(seed_family(chain(index, i)[-1]) for i in ids)


def describe(record: dict) -> str:
    if record["parent_id"] is None:
        return f"{record['id']}  seed, family {seed_family(record)}: {record['instruction']!r}"
    drawn = "uniform: a random cache-pool instruction" if record["parent_pool"] == "cache" else record["parent_pool"]
    sim = "n/a" if record["parent_similarity"] is None else f"{record['parent_similarity']:.3f}"
    return (f"{record['id']}  iteration {record['iteration']}, new {record['origin']} instruction modelled on "
            f"{record['parent_id']} ({drawn}), ROUGE-L {sim} with it: {record['instruction']!r}")


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m lionflow.lineage results/<run> <instruction id>", file=sys.stderr)
        return 2
    try:
        steps = chain(index_files(run_files(argv[0])), argv[1])
    except (KeyError, ValueError, FileNotFoundError) as e:
        print(f"lineage: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    for depth, record in enumerate(steps):
        print(("  " * depth + "<- " if depth else "") + describe(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
