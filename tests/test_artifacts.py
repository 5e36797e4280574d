import json

import pytest

from lionflow.artifacts import ArtifactError, read_json, read_jsonl, write_json, write_jsonl

POOL_RECORD = {"id": "a", "instruction": "Say hi.", "input": "", "origin": "seed", "iteration": 0,
               "parent_id": None, "max_similarity": None}


def test_roundtrip_and_atomic_write(tmp_path):
    path = tmp_path / "sub" / "pool.jsonl"
    assert write_jsonl(path, [POOL_RECORD, {**POOL_RECORD, "id": "b"}], "instruction") == 2
    assert [r["id"] for r in read_jsonl(path, "instruction")] == ["a", "b"]
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".tmp")]


def test_invalid_record_is_not_written(tmp_path):
    path = tmp_path / "pool.jsonl"
    bad = {**POOL_RECORD, "origin": "mystery"}
    with pytest.raises(ArtifactError, match=r"pool.jsonl:2: field 'origin'"):
        write_jsonl(path, [POOL_RECORD, bad], "instruction")
    assert not path.exists()


def test_read_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "seeds.jsonl"
    path.write_text(json.dumps({"id": "1", "instruction": "Add 2 and 3."}) + "\n" + json.dumps({"id": "2"}) + "\n")
    with pytest.raises(ArtifactError, match=r"seeds.jsonl:2: field 'instruction': 'instruction' is a required"):
        read_jsonl(path, "seed_instruction")
    path.write_text('{"id": "1", "instruction": "ok"}\n{"id": "2", "instruction": \n')
    with pytest.raises(ArtifactError, match=r"seeds.jsonl:2: not valid JSON"):
        read_jsonl(path, "seed_instruction")
    path.write_text(json.dumps({"id": "1", "instruction": 5}) + "\n")
    with pytest.raises(ArtifactError, match=r"seeds.jsonl:1: field 'instruction'"):
        read_jsonl(path, "seed_instruction")


def test_json_documents(tmp_path):
    path = tmp_path / "m.json"
    write_json(path, {"model_dir": "x", "metrics": {"t": 0.5}}, "eval_metrics")
    assert read_json(path, "eval_metrics")["metrics"] == {"t": 0.5}
    with pytest.raises(ArtifactError, match="field 'metrics.t'"):
        write_json(path, {"model_dir": "x", "metrics": {"t": "high"}}, "eval_metrics")
