"""Deterministic demo data: the seed instruction pool and the held-out eval sets.

python -m lionflow.oracle.datasets --root /work/main   (re)writes
resources/demo/seed_instructions.jsonl, resources/lm_eval/data/oracle_gen.jsonl,
resources/lm_eval/data/oracle_mc.jsonl, the judge's questions, resources/demo/eval_questions.jsonl
(held out from all three), and the experiment's stratified set resources/lm_eval/data/oracle_levels.jsonl
(held out from all four).

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

from ..artifacts import read_jsonl, write_jsonl
from .tasks import BY_NAME, FAMILIES, Problem, parse_family, problem_key, render, sample_params, sample_problem

SEED_POOL = (240, 1)     # (n, seed) of the pool the eval sets must avoid
JUDGE_QUESTIONS = (20, 5)   # (per category, seed) of the judge's question set
EVAL_LEVELS = (5, 4)        # (per family and level, seed) of the experiment's stratified held-out set
_MC_FAMILIES = ("larger", "parity", "first_letter")


def _pick(rng: random.Random, level_weights: list[float], families=FAMILIES) -> tuple[str, int]:
    # Common families (low rarity rank) are drawn more often.
    fam = rng.choices(families, weights=[len(FAMILIES) - f.rarity for f in families])[0]
    w = level_weights[:fam.max_level]
    return fam.name, rng.choices(range(1, len(w) + 1), weights=w)[0]


def _unique(n: int, rng: random.Random, draw, seen: set, strict: bool = True) -> list:
    """Draw n items whose task key is not in `seen` (the set is updated); strict=False: as many as the
    world has left, up to n."""
    out = []
    for _ in range(200 * n):
        if len(out) == n:
            break
        key, item = draw()
        if key not in seen:
            seen.add(key)
            out.append(item)
    if len(out) < n and strict:
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
        f, params = parse_family(p.instruction)
        if f.options:
            choices = f.options(params)
        else:   # first letter: the right letter plus three other letters of the alphabet
            others = sorted(set("abcdefghijklmnopqrstuvwxyz") - {p.answer})
            choices = rng.sample(others, 3) + [p.answer]
            rng.shuffle(choices)
        return problem_key(p.instruction), {"question": p.instruction, "choices": choices,
                                            "label": choices.index(p.answer), "family": p.family, "level": p.level}

    return _unique(n, rng, draw, _pool_keys())


def make_eval_levels(per_cell: int, seed: int, exclude: set) -> list[dict]:
    """Open questions stratified by family and level: `per_cell` of every family at every one of its
    levels, none of whose tasks is in `exclude` (the seed pool, the other eval sets, the judge's
    questions). The experiment's held-out suite. A cell with fewer tasks left than `per_cell` gets
    what is left: parity at level 1 has 9 tasks in all, every one of them in the seed pool."""
    rng = random.Random(seed)
    seen, out = set(exclude), []
    for family in FAMILIES:
        for level in range(1, family.max_level + 1):
            def draw(family=family, level=level):
                p = render(family.name, sample_params(rng, family.name, level))
                return problem_key(p.instruction), {"question": p.instruction, "answer": p.answer,
                                                    "family": p.family, "level": p.level}
            out += _unique(per_cell, rng, draw, seen, strict=False)
    return out


def sample_pool(n: int, seed: int) -> list[Problem]:
    """n distinct problems with known answers, all families and levels (tests and benchmarks)."""
    rng, seen, pool = random.Random(seed), set(), []
    while len(pool) < n:
        family = rng.choice(FAMILIES)
        p = sample_problem(rng, family.name, rng.randint(1, family.max_level))
        if (p.instruction, p.input) not in seen:
            seen.add((p.instruction, p.input))
            pool.append(p)
    return pool


def make_synthetic_pool(n: int, seed: int) -> Iterator[dict]:
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


# ---------------------------------------------------------------- the judge's question set (eval.judge)

# Categories of the oracle world, in the spirit of Vicuna's (generic, knowledge, math, ...).
CATEGORIES = {
    "words": ("repeat", "first_letter", "uppercase", "reverse", "count_letter"),
    "numbers": ("larger", "parity", "max_list", "min_list", "sort"),
    "math": ("add", "subtract", "multiply", "word_problem"),
}


def demo_questions(per_category: int, seed: int, exclude: set) -> list[dict]:
    """Held-out questions of the oracle's task families, `per_category` per category, levels 1-3,
    none of whose tasks is in `exclude` (problem keys of the seed pool and the lm-eval data).
    Deterministic: `python -m lionflow.oracle.datasets` writes resources/demo/eval_questions.jsonl."""
    rng = random.Random(seed)
    seen = set(exclude)
    by_category: dict[str, list[dict]] = {}
    for category, families in CATEGORIES.items():
        questions = by_category.setdefault(category, [])
        drawn = 0
        for _ in range(500 * per_category):
            if drawn == per_category:
                break
            family = families[drawn % len(families)]  # round robin: every family appears
            p = sample_problem(rng, family, rng.choice([1, 1, 2, 2, 3]) if BY_NAME[family].max_level >= 3 else 1)
            key = problem_key(p.instruction, p.input)
            if key in seen:
                continue
            seen.add(key)
            drawn += 1
            questions.append({"id": f"q-{category}-{drawn:03d}", "category": category, "instruction": p.instruction,
                              "input": p.input})
        if drawn < per_category:
            raise RuntimeError(f"could only draw {drawn} of {per_category} new {category} questions")
    # Interleaved, so that the first N questions (eval.judge.limit) span every category.
    return [q for group in zip(*by_category.values()) for q in group]


def _known_tasks(seed_file, lm_eval_files) -> set:
    keys = set()
    for r in read_jsonl(seed_file, "seed_instruction"):
        keys.add(problem_key(r["instruction"], r.get("input") or ""))
    for path in lm_eval_files:
        for line in open(path, encoding="utf-8"):
            if line.strip():
                keys.add(problem_key(json.loads(line)["question"]))
    return keys - {None}


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
    exclude = _known_tasks(args.root / "resources/demo/seed_instructions.jsonl",
                           [args.root / f"resources/lm_eval/data/{name}.jsonl" for name in ("oracle_gen", "oracle_mc")])
    out = args.root / "resources/demo/eval_questions.jsonl"
    questions = demo_questions(*JUDGE_QUESTIONS, exclude)
    n = write_jsonl(out, questions, "eval_question")
    print(f"wrote {n} questions to {out}")
    judged = {problem_key(q["instruction"], q["input"]) for q in questions}
    _write(args.root / "resources/lm_eval/data/oracle_levels.jsonl", make_eval_levels(*EVAL_LEVELS, exclude | judged))


if __name__ == "__main__":
    main()
