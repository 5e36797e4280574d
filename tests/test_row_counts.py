"""Row-count invariants: every stage checks records in = records out + recorded failures when it writes,
and a mismatch (a bug that loses records) stops it with an error naming the stage, writing nothing."""
import json

import polars as pl
import pytest

from lionflow import discrimination, pools
from lionflow.artifacts import write_jsonl
from lionflow.failures import check_rows
from lionflow.frames import write_frames


def test_check_rows_names_the_stage_and_the_loss():
    check_rows("teacher", 5, 3, 2)
    with pytest.raises(ValueError, match=r"referee: 5 records in but 3 written and 1 recorded as failed: 1 lost"):
        check_rows("referee", 5, 3, 1)


def test_write_frames_checks_counts_before_writing_anything(tmp_path):
    frame = pl.DataFrame({"id": ["a"], "instruction": ["Do it."], "input": [""]})
    seen = []
    assert write_frames([(frame, tmp_path / "a.jsonl", "seed_instruction")], seen.append) == [1] and seen == [[1]]
    with pytest.raises(ValueError, match="lost"):
        write_frames([(frame, tmp_path / "b.jsonl", "seed_instruction"), (frame, tmp_path / "c.jsonl", "seed_instruction")],
                     lambda counts: check_rows("some stage", 3, sum(counts), 0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.jsonl"]  # no output, no temp file


def _scores(path):
    order = {"first": "teacher", "raw": "r", "attempts": 1, "teacher_score": 9, "student_score": 5, "error": None}
    rows = [{"id": str(i), "instruction": "x y z w", "input": "", "teacher_score": 9, "student_score": 5 + i, "gap": 4 - i,
             "failed": False, "orders": [order, {**order, "first": "student"}]} for i in range(4)]
    write_jsonl(path, rows, "referee_score")


def test_split_that_loses_a_pair_stops_and_writes_nothing(tmp_path, monkeypatch):
    _scores(tmp_path / "scores.jsonl")
    assert discrimination.write_split_hard_easy(tmp_path / "scores.jsonl", 2, tmp_path / "h.jsonl",
                                                tmp_path / "e.jsonl") == (3, 1, 0)
    split = discrimination.split_hard_easy
    monkeypatch.setattr(discrimination, "split_hard_easy", lambda s, t: (split(s, t)[0].head(1), split(s, t)[1]))
    with pytest.raises(ValueError, match=r"split_hard_easy: 4 records in but 2 written and 0 recorded as failed"):
        discrimination.write_split_hard_easy(tmp_path / "scores.jsonl", 2, tmp_path / "h2.jsonl", tmp_path / "e2.jsonl")
    assert not (tmp_path / "h2.jsonl").exists() and not (tmp_path / "e2.jsonl").exists()


def _seeds(path, n):
    path.write_text("".join(json.dumps({"id": f"s{i}", "instruction": f"Task {i} now."}) + "\n" for i in range(n)))
    return path


def test_pool_stages_check_their_counts(tmp_path, monkeypatch):
    seeds = _seeds(tmp_path / "seeds.jsonl", 3)
    assert pools.write_seed_pools(seeds, tmp_path / "t1.jsonl", tmp_path / "c1.jsonl") == 3
    next_pools = pools.next_pools
    monkeypatch.setattr(pools, "next_pools", lambda c, new, mode: (next_pools(c, new, mode)[0],
                                                                    next_pools(c, new, mode)[1].head(2)))
    new = [{"id": f"n{i}", "instruction": f"New task {i}.", "input": "", "origin": "hard", "iteration": 1,
            "parent_id": "s0", "max_similarity": 0.5, "parent_pool": "hard", "parent_similarity": 0.5} for i in range(2)]
    write_jsonl(tmp_path / "new.jsonl", new, "instruction")
    with pytest.raises(ValueError, match=r"update_pools \(cache pool\): 5 records in but 2 written"):
        pools.write_next_pools(tmp_path / "c1.jsonl", [tmp_path / "new.jsonl"], "new", tmp_path / "t2.jsonl",
                               tmp_path / "c2.jsonl")
    assert not (tmp_path / "t2.jsonl").exists() and not (tmp_path / "c2.jsonl").exists()


def test_student_answers_must_cover_every_instruction(monkeypatch):
    from lionflow.student import generate

    monkeypatch.setattr(generate, "generate_answers", lambda *a, **k: [{"answer": "x", "finish_reason": "stop"}])
    items = [{"id": str(i), "instruction": "Do it.", "input": ""} for i in range(2)]
    with pytest.raises(ValueError, match=r"student:1: 2 records in but 1 written"):
        generate.answer_records("unused", items, None, model="student:1", device="cpu")
