"""Polars frames of artifacts: dtypes from the JSON Schemas, and write checks that decide as jsonschema does."""
import re

import polars as pl
import pytest

from lionflow.artifacts import ArtifactError, _validator, read_jsonl, schema, write_jsonl
from lionflow.frames import _vectorized, polars_schema, read_frame, records_frame, scan_frame, write_frame, write_frames

from test_artifacts import _example, _mutants

FRAME_KINDS = ["instruction", "scored_instruction", "answer", "rejected_instruction", "referee_score"]
STRINGS = ["\x1c", "\u00a0", "\u200b", " \t", "é", "a\nb"]  # whitespace that Python's re and Rust's regex judge apart


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_dtypes_follow_the_json_schema(kind, tmp_path):
    record = _example(schema(kind))
    assert list(polars_schema(kind)) == list(schema(kind)["properties"])
    write_jsonl(tmp_path / "a.jsonl", [record, record], kind)
    frame = read_frame(tmp_path / "a.jsonl", kind)
    assert frame.schema == polars_schema(kind) and frame.height == 2
    assert write_frame(frame, tmp_path / "b.jsonl", kind) == 2
    assert read_jsonl(tmp_path / "b.jsonl", kind) == read_jsonl(tmp_path / "a.jsonl", kind)


@pytest.mark.parametrize("kind", FRAME_KINDS)
def test_write_frame_decides_as_jsonschema(kind, tmp_path):
    """Every mutant that fits the frame's dtypes: written iff jsonschema accepts the row it becomes."""
    base = _example(schema(kind))
    mutants = list(_mutants(base))
    for key, spec in schema(kind)["properties"].items():
        if "string" in str(spec.get("type", "")):
            mutants += [{**base, key: text} for text in STRINGS]
    checked = 0
    for record in mutants:
        try:
            frame = pl.DataFrame([record], schema=polars_schema(kind), strict=True)
        except (TypeError, pl.exceptions.PolarsError):
            continue  # not representable with these dtypes: a frame can never hold it
        row = frame.row(0, named=True)
        path = tmp_path / f"{checked}.jsonl"
        if _validator(kind).is_valid(row):
            assert write_frame(frame, path, kind) == 1 and read_jsonl(path, kind) == [row]
        else:
            with pytest.raises(ArtifactError, match=rf"{checked}.jsonl:1: field '"):
                write_frame(frame, path, kind)
            assert not path.exists()
        checked += 1
    assert checked > 20 and _vectorized(kind) == (kind != "referee_score")


def test_errors_name_the_line_and_nothing_is_written(tmp_path):
    rows = [_example(schema("instruction")) | {"id": str(i)} for i in range(5)]
    rows[3] = rows[3] | {"max_similarity": 1.5}
    rows[4] = rows[4] | {"origin": "elsewhere"}  # a later violation: the error names the first one
    with pytest.raises(ArtifactError, match=r"out.jsonl:4: field 'max_similarity': 1.5 is greater than the maximum"):
        write_frame(records_frame(rows, "instruction"), tmp_path / "out.jsonl", "instruction")
    with pytest.raises(ArtifactError, match="missing \\['origin'\\], extra \\['source'\\]"):
        write_frame(records_frame(rows[:1], "instruction").rename({"origin": "source"}), tmp_path / "out.jsonl",
                    "instruction")
    assert list(tmp_path.iterdir()) == []


def test_scan_checks_every_record_first(tmp_path):
    (tmp_path / "pool.jsonl").write_text(
        "".join(f'{{"id": "{i}", "instruction": "x", "input": "", "origin": "seed", "iteration": 0, '
                f'"parent_id": null, "max_similarity": null, "parent_pool": null, "parent_similarity": null}}\n'
                for i in range(3))
        + '{"id": "3", "instruction": "x", "input": "", "origin": "seed", "iteration": "0", '
          '"parent_id": null, "max_similarity": null, "parent_pool": null, "parent_similarity": null}\n')
    with pytest.raises(ArtifactError, match=r"pool.jsonl:4: field 'iteration': '0' is not of type 'integer'"):
        scan_frame(tmp_path / "pool.jsonl", "instruction")


def test_record_by_record_kinds_number_lines_across_batches(tmp_path):
    """Kinds with nested fields are checked in streamed batches; an error still names the file's line."""
    good = _example(schema("referee_score"))
    rows = [good | {"id": str(i)} for i in range(10_003)]
    rows[-1] = rows[-1] | {"orders": rows[-1]["orders"][:1]}  # minItems 2
    with pytest.raises(ArtifactError, match=r"scores.jsonl:10003: field 'orders'"):
        write_frame(records_frame(rows, "referee_score"), tmp_path / "scores.jsonl", "referee_score")
    assert write_frame(records_frame(rows[:-1], "referee_score"), tmp_path / "scores.jsonl", "referee_score") == 10_002


@pytest.mark.parametrize("column, values", [("iteration", ["3"]), ("id", [5]), ("iteration", [1.7]),
                                            ("iteration", [True]), ("max_similarity", ["0.5"])])
def test_a_column_of_another_dtype_is_an_error_not_a_cast(column, values, tmp_path):
    frame = records_frame([_example(schema("instruction"))], "instruction").with_columns(pl.Series(column, values))
    with pytest.raises(ArtifactError, match=rf"frame dtypes do not match: {column} is"):
        write_frame(frame, tmp_path / "out.jsonl", "instruction")
    assert list(tmp_path.iterdir()) == []


def test_nested_fields_must_match_too(tmp_path):
    record = _example(schema("referee_score"))
    orders = [{k: v for k, v in o.items() if k not in ("raw", "error")} | {"note": "x"} for o in record["orders"]]
    with pytest.raises(ArtifactError, match="frame dtypes do not match: orders is"):
        write_frame(pl.DataFrame([record | {"orders": orders}]), tmp_path / "s.jsonl", "referee_score")


@pytest.mark.parametrize("kind, field", [("instruction", "max_similarity"), ("referee_score", "gap"),
                                         ("referee_score", "orders.1.teacher_score")])
@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_nan_and_infinity_are_named_errors(kind, field, value, tmp_path):
    record = dict(_example(schema(kind)))
    if "." in field:
        record["orders"] = [dict(o, teacher_score=5.0) for o in record["orders"]]
        record["orders"][1]["teacher_score"] = value
    else:
        record[field] = value
    with pytest.raises(ArtifactError, match=rf"out.jsonl:1: field '{field}'"):
        write_frame(records_frame([record], kind), tmp_path / "out.jsonl", kind)
    assert list(tmp_path.iterdir()) == []


def test_paired_outputs_appear_together_or_not_at_all(tmp_path):
    good = records_frame([_example(schema("instruction"))], "instruction")
    bad = good.with_columns(pl.lit(2.0).alias("max_similarity"))
    with pytest.raises(ArtifactError, match="b.jsonl:1: field 'max_similarity'"):
        write_frames([(good, tmp_path / "a.jsonl", "instruction"), (bad, tmp_path / "b.jsonl", "instruction")])
    assert list(tmp_path.iterdir()) == []
    assert write_frames([(good, tmp_path / "a.jsonl", "instruction"), (good, tmp_path / "b.jsonl", "instruction")]) == [1, 1]


@pytest.mark.parametrize("kind, field, value", [("instruction", "iteration", "1.0"),
                                                ("instruction", "iteration", str(2**63)),
                                                ("referee_score", "orders.1.attempts", "2.0")])
def test_scan_refuses_integers_polars_cannot_read(kind, field, value, tmp_path):
    """JSON Schema calls 1.0 an integer; polars' Int64 column does not: a named error, not a polars crash."""
    record = _example(schema(kind))
    if kind == "referee_score":
        record = record | {"orders": [dict(o) for o in record["orders"]]}
    write_jsonl(tmp_path / "a.jsonl", [record], kind)
    text = (tmp_path / "a.jsonl").read_text()
    key = field.split(".")[-1]
    i = text.rindex(f'"{key}": ')
    j = i + len(f'"{key}": ')
    k = min(text.index(c, j) for c in ",}" if c in text[j:])
    (tmp_path / "a.jsonl").write_text(text[:j] + value + text[k:])
    with pytest.raises(ArtifactError, match=rf"a.jsonl:1: field '{re.escape(field)}'"):
        scan_frame(tmp_path / "a.jsonl", kind)
