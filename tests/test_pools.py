import json

import pytest

from lionflow.artifacts import ArtifactError
from lionflow.pools import load_seed_pool, next_pools


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


def test_pool_update_as_in_the_paper():
    cache = [{"id": "s1"}, {"id": "s2"}]
    new = [{"id": "n1"}, {"id": "n2"}]
    train, next_cache = next_pools(cache, new, "new")
    assert train == new and next_cache == cache + new
    train, next_cache = next_pools(cache, new, "all")
    assert train == next_cache == cache + new
    with pytest.raises(ValueError, match="already in the cache pool"):
        next_pools(cache, [{"id": "s1"}], "new")


def test_streaming_pool_stages_match_the_in_memory_rules(tmp_path):
    from lionflow.artifacts import read_jsonl, write_jsonl
    from lionflow.pools import write_next_pools, write_seed_pools

    seeds = _write(tmp_path / "seeds.jsonl", [{"id": f"s{i}", "instruction": f"Task {i}.", "input": None}
                                               for i in range(4)])
    assert write_seed_pools(seeds, tmp_path / "train1.jsonl", tmp_path / "cache1.jsonl") == 4
    cache = read_jsonl(tmp_path / "cache1.jsonl", "instruction")
    assert cache == read_jsonl(tmp_path / "train1.jsonl", "instruction") == load_seed_pool(seeds)
    new = [{**cache[0], "id": f"n{i}", "origin": "hard", "iteration": 1, "parent_id": "s0", "max_similarity": 0.5}
           for i in range(2)]
    for mode in ("new", "all"):
        counts = write_next_pools(tmp_path / "cache1.jsonl", new, mode, tmp_path / "train2.jsonl", tmp_path / "cache2.jsonl")
        train, next_cache = next_pools(cache, new, mode)
        assert counts == (len(train), len(next_cache))
        assert read_jsonl(tmp_path / "train2.jsonl", "instruction") == train
        assert read_jsonl(tmp_path / "cache2.jsonl", "instruction") == next_cache
    with pytest.raises(ValueError, match="already in the cache pool: \\['s1'\\]"):
        write_next_pools(tmp_path / "cache1.jsonl", [{**new[0], "id": "s1"}], "new", tmp_path / "t.jsonl", tmp_path / "c.jsonl")
    with pytest.raises(ArtifactError, match=r"empty.jsonl: no seed instructions"):
        write_seed_pools(_write(tmp_path / "empty.jsonl", []), tmp_path / "t.jsonl", tmp_path / "c.jsonl")
    assert not (tmp_path / "t.jsonl").exists() and not (tmp_path / "c.jsonl").exists()
    write_jsonl(tmp_path / "unused.jsonl", [], "instruction")  # an empty pool file is valid
