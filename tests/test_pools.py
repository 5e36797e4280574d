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
    with pytest.raises(ArtifactError, match=r"s2.jsonl:2: field 'id': duplicate id '1'"):
        load_seed_pool(_write(tmp_path / "s2.jsonl", [{"id": "1", "instruction": "A b c d."},
                                                      {"id": "1", "instruction": "E f g h."}]))
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
