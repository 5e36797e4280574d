import json

import pytest

from lionflow.artifacts import ArtifactError
from lionflow.pools import load_seed_pool


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_seed_pool_keeps_input_and_rejects_duplicates(tmp_path):
    pool = load_seed_pool(_write(tmp_path / "s.jsonl", [
        {"id": "1", "instruction": "Sort the numbers in the input.", "input": "3, 1"},
        {"id": "2", "instruction": "Add 2 and 3.", "input": None},
        {"id": "3", "instruction": "Add 4 and 3."}]))
    assert [r["input"] for r in pool] == ["3, 1", "", ""]
    assert all(r["origin"] == "seed" and r["iteration"] == 0 for r in pool)
    dup = tmp_path / "s2.jsonl"
    dup.write_text('{"id": "1", "instruction": "A b c d."}\n\n{"id": "1", "instruction": "E f g h."}\n')
    with pytest.raises(ArtifactError, match=r"s2.jsonl:3: field 'id': duplicate id '1' \(first on line 1\)"):
        load_seed_pool(str(dup))  # line numbers are the file's, blank lines included
    with pytest.raises(ArtifactError, match=r"s3.jsonl:1: field 'id'"):
        load_seed_pool(_write(tmp_path / "s3.jsonl", [{"instruction": "A b c d."}]))


def _pool(ids, origin="seed", iteration=0):
    return [{"id": i, "instruction": f"Task {i} please.", "input": "", "origin": origin, "iteration": iteration,
             "parent_id": None if origin == "seed" else "s0", "max_similarity": None if origin == "seed" else 0.5,
             "parent_pool": None if origin == "seed" else origin, "parent_similarity": None if origin == "seed" else 0.25}
            for i in ids]


def test_pool_update_as_in_the_paper(tmp_path):
    from lionflow.artifacts import read_jsonl, write_jsonl
    from lionflow.pools import write_next_pools

    cache, new_hard, new_easy = _pool(["s0", "s1"]), _pool(["h1"], "hard", 1), _pool(["e1", "e2"], "easy", 1)
    write_jsonl(tmp_path / "cache1.jsonl", cache, "instruction")
    write_jsonl(tmp_path / "hard.jsonl", new_hard, "instruction")
    write_jsonl(tmp_path / "easy.jsonl", new_easy, "instruction")
    new_paths = [tmp_path / "hard.jsonl", tmp_path / "easy.jsonl"]
    for mode, train in (("new", new_hard + new_easy), ("all", cache + new_hard + new_easy)):
        counts = write_next_pools(tmp_path / "cache1.jsonl", new_paths, mode, tmp_path / "train2.jsonl",
                                  tmp_path / "cache2.jsonl")
        assert counts == (len(train), 5)
        assert read_jsonl(tmp_path / "train2.jsonl", "instruction") == train
        assert read_jsonl(tmp_path / "cache2.jsonl", "instruction") == cache + new_hard + new_easy
    write_jsonl(tmp_path / "clash.jsonl", _pool(["s1"], "hard", 1), "instruction")
    with pytest.raises(ValueError, match="already in the cache pool: \\['s1'\\]"):
        write_next_pools(tmp_path / "cache1.jsonl", [tmp_path / "clash.jsonl"], "new", tmp_path / "t.jsonl",
                         tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="given twice: \\['h1'\\]"):
        write_next_pools(tmp_path / "cache1.jsonl", [tmp_path / "hard.jsonl"] * 2, "new", tmp_path / "t.jsonl",
                         tmp_path / "c.jsonl")
    with pytest.raises(ValueError, match="must be 'new' or 'all'"):
        write_next_pools(tmp_path / "cache1.jsonl", new_paths, "some", tmp_path / "t.jsonl", tmp_path / "c.jsonl")
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "c.jsonl").exists()


def test_seed_pools_file_to_file(tmp_path):
    from lionflow.artifacts import read_jsonl, write_jsonl
    from lionflow.pools import write_seed_pools

    seeds = _write(tmp_path / "seeds.jsonl", [{"id": f"s{i}", "instruction": f"Task {i}.", "input": None}
                                               for i in range(4)])
    assert write_seed_pools(seeds, tmp_path / "train1.jsonl", tmp_path / "cache1.jsonl") == 4
    cache = read_jsonl(tmp_path / "cache1.jsonl", "instruction")
    assert cache == read_jsonl(tmp_path / "train1.jsonl", "instruction") == load_seed_pool(seeds)
    with pytest.raises(ArtifactError, match=r"empty.jsonl: no seed instructions"):
        write_seed_pools(_write(tmp_path / "empty.jsonl", []), tmp_path / "t.jsonl", tmp_path / "c.jsonl")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"id": "1", "instruction": "A b c d."}\n{"id": "1", "instruction": "E f g h."}\n')
    with pytest.raises(ArtifactError, match=r"dup.jsonl:2: field 'id': duplicate id"):
        write_seed_pools(dup, tmp_path / "t.jsonl", tmp_path / "c.jsonl")
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "c.jsonl").exists()
    write_jsonl(tmp_path / "unused.jsonl", [], "instruction")  # an empty pool file is valid
