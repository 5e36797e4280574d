import json

from lionflow.artifacts import read_jsonl
from lionflow.oracle import datasets
from lionflow.oracle.tasks import parse_problem


def test_synthetic_pool_is_sized_deterministic_distinct_and_solvable(tmp_path):
    pool = list(datasets.make_synthetic_pool(3000, seed=5))
    assert pool == list(datasets.make_synthetic_pool(3000, seed=5)) != list(datasets.make_synthetic_pool(3000, seed=6))
    assert len({r["id"] for r in pool}) == len({(r["instruction"], r["input"]) for r in pool}) == 3000
    assert all(parse_problem(r["instruction"], r["input"]) for r in pool)  # the oracle can answer every one
    assert len({parse_problem(r["instruction"], r["input"]).family for r in pool}) >= 10

    out = tmp_path / "syn.jsonl"
    datasets.main(["--synthetic", "50", "--out", str(out), "--seed", "5"])
    assert read_jsonl(out, "seed_instruction") == pool[:50]
    assert json.loads(out.read_text().splitlines()[0])["id"] == "syn-0000001"
