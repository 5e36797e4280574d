"""Deterministic demo data: the seed instruction pool and two small eval sets.

python -m lionflow.oracle.datasets --root /work/main   (re)writes
resources/demo/seed_instructions.jsonl, resources/lm_eval/data/oracle_gen.jsonl
and resources/lm_eval/data/oracle_mc.jsonl.

python -m lionflow.oracle.datasets --synthetic 70000 --out pool.jsonl   writes a synthetic
paper-scale seed pool (for the benchmarks) instead.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
from collections.abc import Iterator
from pathlib import Path

from .tasks import BY_NAME, FAMILIES, _parse, problem_key, render, sample_params

SEED_POOL = (240, 1)     # (n, seed) of the pool the eval sets must avoid
_MC_FAMILIES = ("larger", "parity", "first_letter")


def _pick(rng: random.Random, level_weights: list[float], families=FAMILIES) -> tuple[str, int]:
    # Common families (low rarity rank) are drawn more often.
    fam = rng.choices(families, weights=[len(FAMILIES) - f.rarity for f in families])[0]
    w = level_weights[:fam.max_level]
    return fam.name, rng.choices(range(1, len(w) + 1), weights=w)[0]


def _unique(n: int, rng: random.Random, draw, seen: set) -> list:
    """Draw n items whose task key is not in `seen` (the set is updated)."""
    out = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        key, item = draw()
        if key not in seen:
            seen.add(key)
            out.append(item)
    if len(out) < n:
        raise RuntimeError(f"could only draw {len(out)} of {n} distinct tasks")
    return out


def make_seed_pool(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)

    def draw():
        fam, level = _pick(rng, [0.45, 0.3, 0.15, 0.07, 0.03])
        # Families with an Alpaca-style form use it most of the time.
        p = render(fam, sample_params(rng, fam, level), split=rng.random() < 0.7)
        return problem_key(p.instruction, p.input), p

    probs = _unique(n, rng, draw, set())
    return [{"id": f"seed-{i:04d}", "instruction": p.instruction, "input": p.input}
            for i, p in enumerate(probs, 1)]


def _pool_keys() -> set:
    return {problem_key(r["instruction"], r["input"]) for r in make_seed_pool(*SEED_POOL)}


def make_eval_gen(n: int, seed: int) -> list[dict]:
    """Open questions (self-contained), disjoint from the default seed pool."""
    rng = random.Random(seed)

    def draw():
        fam, level = _pick(rng, [0.5, 0.35, 0.15])
        p = render(fam, sample_params(rng, fam, level))
        return problem_key(p.instruction), {"question": p.instruction, "answer": p.answer,
                                            "family": p.family, "level": p.level}

    return _unique(n, rng, draw, _pool_keys())


def make_eval_mc(n: int, seed: int) -> list[dict]:
    """Multiple-choice questions (larger / parity / first letter), disjoint from the seed pool."""
    rng = random.Random(seed)
    fams = [BY_NAME[f] for f in _MC_FAMILIES]

    def draw():
        fam, level = _pick(rng, [0.5, 0.35, 0.15], fams)
        p = render(fam, sample_params(rng, fam, level))
        f, params = _parse(p.instruction)
        if f.options:
            choices = f.options(params)
        else:   # first letter: the right letter plus three other letters of the alphabet
            others = sorted(set("abcdefghijklmnopqrstuvwxyz") - {p.answer})
            choices = rng.sample(others, 3) + [p.answer]
            rng.shuffle(choices)
        return problem_key(p.instruction), {"question": p.instruction, "choices": choices,
                                            "label": choices.index(p.answer), "family": p.family, "level": p.level}

    return _unique(n, rng, draw, _pool_keys())


def make_synthetic_pool(n: int, seed: int = 0) -> Iterator[dict]:
    """n distinct seed-instruction records from the task families, streamed (paper scale: 52K-700K).

    Levels are drawn flatter than the demo pool's, since the low levels of some families hold
    only a few dozen distinct tasks. Distinctness is tracked with 8-byte digests of the text,
    so memory stays ~100 bytes per record, not a whole record list.
    """
    rng = random.Random(seed)
    seen: set[bytes] = set()
    drawn = 0
    for _ in range(200 * n):
        if drawn == n:
            return
        fam, level = _pick(rng, [0.3, 0.25, 0.2, 0.15, 0.1])
        p = render(fam, sample_params(rng, fam, level), split=rng.random() < 0.7)
        digest = hashlib.blake2b(f"{p.instruction}\0{p.input}".encode(), digest_size=8).digest()
        if digest in seen:
            continue
        seen.add(digest)
        drawn += 1
        yield {"id": f"syn-{drawn:07d}", "instruction": p.instruction, "input": p.input}
    if drawn < n:
        raise RuntimeError(f"could only draw {drawn} of {n} distinct tasks")


def _write(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    print(f"wrote {len(records)} records to {path}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=Path("."))
    ap.add_argument("--synthetic", type=int, metavar="N", help="write N synthetic pool instructions to --out")
    ap.add_argument("--out", type=Path, help="output JSONL of --synthetic")
    ap.add_argument("--seed", type=int, default=0, help="random seed of --synthetic")
    args = ap.parse_args(argv)
    if args.synthetic is not None:
        if args.out is None:
            ap.error("--synthetic needs --out")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(r) + "\n" for r in make_synthetic_pool(args.synthetic, args.seed))
        print(f"wrote {args.synthetic} synthetic instructions to {args.out}")
        return
    _write(args.root / "resources/demo/seed_instructions.jsonl", make_seed_pool(*SEED_POOL))
    _write(args.root / "resources/lm_eval/data/oracle_gen.jsonl", make_eval_gen(60, 2))
    _write(args.root / "resources/lm_eval/data/oracle_mc.jsonl", make_eval_mc(60, 3))


if __name__ == "__main__":
    main()
