import json
import re

import pytest

from lionflow.artifacts import ArtifactError, atomic_dir, read_json, read_jsonl, write_json, write_jsonl

POOL_RECORD = {"id": "a", "instruction": "Say hi.", "input": "", "origin": "seed", "iteration": 0,
               "parent_id": None, "max_similarity": None, "parent_pool": None, "parent_similarity": None}


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
    write_json(path, {"model_dir": "x", "metrics": {"t": 0.5}, "groups": []}, "eval_metrics")
    assert read_json(path, "eval_metrics")["metrics"] == {"t": 0.5}
    with pytest.raises(ArtifactError, match="field 'metrics.t'"):
        write_json(path, {"model_dir": "x", "metrics": {"t": "high"}, "groups": []}, "eval_metrics")


def _example(s):
    """A minimal instance of a (sub)schema, built from its keywords."""
    if "enum" in s:
        return s["enum"][0]
    kind = s.get("type", "object")
    kind = [k for k in kind if k != "null"][0] if isinstance(kind, list) else kind
    if kind == "object":
        return {k: _example(sub) for k, sub in s.get("properties", {}).items()}
    if kind == "array":
        return [_example(s.get("items", {"type": "string"}))] * s.get("minItems", 0)
    if kind in ("number", "integer"):
        return s.get("minimum", 0)
    return {"string": "x", "boolean": False}[kind]


PROBES = [None, True, False, 0, 1, 1.0, 1.5, -1, 11, 1e9, "", " ", "x", "teacher", [], [{}], {}]


def _mutants(value):
    """The value with, in turn, every nested field replaced by each probe, removed, or joined by an extra key."""
    yield value
    if isinstance(value, dict):
        yield {**value, "zz_extra": 1}
        for k, v in value.items():
            yield {kk: vv for kk, vv in value.items() if kk != k}
            for sub in [*PROBES, *_mutants(v)]:
                yield {**value, k: sub}
    elif isinstance(value, list) and value:
        for sub in _mutants(value[0]):
            yield [sub] + value[1:]
        yield value + value[:1]


def test_fast_path_never_accepts_what_jsonschema_rejects(tmp_path):
    from importlib import resources

    from lionflow.artifacts import _fast_check, _validator, schema, validate

    kinds = sorted(p.name[:-5] for p in resources.files("lionflow.schemas").iterdir() if p.name.endswith(".json"))
    fast = [k for k in kinds if _fast_check(k) is not None]
    assert {"instruction", "seed_instruction", "referee_score", "answer", "scored_instruction"} <= set(fast)
    checked = 0
    for kind in fast:
        for record in _mutants(_example(schema(kind))):
            valid = _validator(kind).is_valid(record)
            try:
                _fast_check(kind)(record)
                fast_valid = True
            except Exception:
                fast_valid = False
            assert valid or not fast_valid, (kind, record)
            if valid:
                validate(record, kind, "x")  # the public check agrees with jsonschema both ways
            else:
                with pytest.raises(ArtifactError):
                    validate(record, kind, "x")
            checked += 1
    assert checked > 1000


def test_streaming_writer_and_reader(tmp_path):
    from lionflow.artifacts import JsonlWriter, iter_jsonl

    path = tmp_path / "pool.jsonl"
    records = ({**POOL_RECORD, "id": str(i)} for i in range(5))  # a generator, consumed once
    assert write_jsonl(path, records, "instruction") == 5
    assert [r["id"] for r in iter_jsonl(path, "instruction")] == ["0", "1", "2", "3", "4"]
    with pytest.raises(ArtifactError, match=r"new.jsonl:3: field 'iteration'"):
        with JsonlWriter(tmp_path / "new.jsonl", "instruction") as out:
            for i in range(5):
                out.write({**POOL_RECORD, "iteration": -1 if i == 2 else 0})
    with pytest.raises(RuntimeError):
        with JsonlWriter(tmp_path / "crash.jsonl", "instruction") as out:
            out.write(POOL_RECORD)
            raise RuntimeError("crash mid-write")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool.jsonl"]  # no partial file, no temp file


@pytest.mark.parametrize("field, reason", [
    ('"id": "a", "id": "z"', "duplicate key 'id'"),  # json keeps the last, polars the first: refuse both
    ('"id": "a", "max_similarity": NaN', "NaN is not JSON"),
    ('"id": "a", "max_similarity": -Infinity', "-Infinity is not JSON"),
    ('"id": "a", "max_similarity": 1e400', "number 1e400 is out of range"),
    ('"id": "a\\ud800x"', "a lone surrogate escape"),
])
def test_reads_are_strict_json(field, reason, tmp_path):
    """Every reader of a file (jsonschema through json, polars through its own parser) must see the same record."""
    common = '"input": "", "origin": "seed", "iteration": 0, "parent_id": null, "parent_pool": null, "parent_similarity": null'
    ok = f'{{"id": "p", "instruction": "Do \\ud83d\\ude00.", {common}, "max_similarity": null}}\n'  # a pair: fine
    similarity = "" if "max_similarity" in field else ', "max_similarity": null'
    (tmp_path / "pool.jsonl").write_text(ok + f'{{{field}, "instruction": "Do x.", {common}{similarity}}}\n')
    with pytest.raises(ArtifactError, match=rf"pool.jsonl:2: not valid JSON \({re.escape(reason)}\)"):
        read_jsonl(tmp_path / "pool.jsonl", "instruction")
    (tmp_path / "pool.jsonl").write_text(ok)
    assert read_jsonl(tmp_path / "pool.jsonl", "instruction")[0]["instruction"] == "Do \U0001f600."


def test_writes_refuse_nan_and_infinity_naming_the_field(tmp_path):
    record = POOL_RECORD | {"max_similarity": float("nan")}
    with pytest.raises(ArtifactError, match=r"pool.jsonl:2: field 'max_similarity': not a finite number"):
        write_jsonl(tmp_path / "pool.jsonl", [POOL_RECORD, record], "instruction")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_appears_only_complete(tmp_path):
    """atomic_dir (the trained checkpoint): filled in a temp folder, renamed into place; a crash leaves the
    previous folder (or none), and a single writer's next write removes the temp folder a kill -9 left."""
    out = tmp_path / "student"
    with pytest.raises(RuntimeError):
        with atomic_dir(out) as tmp:
            (tmp / "model.safetensors").write_text("half")
            raise RuntimeError("killed mid-save")
    assert list(tmp_path.iterdir()) == []
    with atomic_dir(out) as tmp:
        (tmp / "model.safetensors").write_text("v1")
    stale = tmp_path / ".student.x.tmp"  # what a kill -9 leaves (no exception handler runs)
    stale.mkdir()
    with atomic_dir(out, single_writer=True) as tmp:
        assert not out.joinpath("config.json").exists() and (out / "model.safetensors").read_text() == "v1"
        (tmp / "model.safetensors").write_text("v2")
    assert [p.name for p in tmp_path.iterdir()] == ["student"] and (out / "model.safetensors").read_text() == "v2"
    assert out.stat().st_mode & 0o777 == 0o777 & ~_umask()


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
