"""Polars frames of the pipeline's JSONL artifacts, under the same JSON Schemas as `lionflow.artifacts`.

Pools reach 70K-700K instructions; their stages (pool updates, the hard/easy split, joins,
sampling, summary statistics) are polars queries, lazy where the data can grow, so that they
stream with flat memory. The JSON Schema stays the one statement of each artifact's shape:

- reading (`scan_frame`): every record first passes the JSON Schema, streamed through
  `iter_jsonl` (strict JSON, errors name file:line:field), and holds its integers as integers;
  polars then reads the file with dtypes derived from the same schema (`polars_schema`), so
  both parsers see the same record.
- writing (`write_frame`): a frame whose columns and dtypes are exactly the derived ones can
  neither miss nor add a key, so the rest of the schema (null where not allowed, enum,
  minLength, pattern, bounds, finite numbers) is checked as column expressions, streamed;
  the first offending row goes to jsonschema, which words the error with its line and field.
  Kinds outside that subset (arrays, nested objects, optional keys) are checked record by
  record in streamed batches. A column of another dtype is an error, never a cast. Files
  appear atomically, and `write_frames` writes several together: all of them or none.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Callable
from functools import cache
from pathlib import Path

import polars as pl

from .artifacts import ArtifactError, iter_jsonl, non_finite_field, schema, validate

_SCALARS = {"string": pl.String, "integer": pl.Int64, "number": pl.Float64, "boolean": pl.Boolean}


def _types(spec: dict) -> list[str]:
    if "type" in spec:
        return [spec["type"]] if isinstance(spec["type"], str) else list(spec["type"])
    if "enum" in spec and all(isinstance(v, str) for v in spec["enum"]):
        return ["string"]
    raise ValueError(f"no polars dtype for schema {spec}")


def _dtype(spec: dict) -> pl.DataType:
    kinds = [t for t in _types(spec) if t != "null"]
    if len(kinds) != 1:
        raise ValueError(f"no single polars dtype for types {kinds}")
    if kinds[0] == "array":
        return pl.List(_dtype(spec["items"]))
    if kinds[0] == "object":
        return pl.Struct({name: _dtype(sub) for name, sub in spec["properties"].items()})
    return _SCALARS[kinds[0]]


@cache
def polars_schema(kind: str) -> pl.Schema:
    """Column names and dtypes of artifact `kind`, in the schema's property order."""
    return pl.Schema({name: _dtype(spec) for name, spec in schema(kind)["properties"].items()})


@cache
def _vectorized(kind: str) -> bool:
    """True when column checks decide exactly what the JSON Schema decides (flat, closed, all required)."""
    s = schema(kind)
    props = s["properties"]
    return (s.get("additionalProperties") is False and set(s.get("required", ())) == set(props)
            and all(set(_types(p)) <= set(_SCALARS) | {"null"} for p in props.values()))


def _violations(kind: str) -> dict[str, pl.Expr]:
    """Per column: true on a row that breaks a keyword of the (flat) schema; nulls compare as no violation."""
    by_column = {}
    for name, spec in schema(kind)["properties"].items():
        col, checks = pl.col(name), []
        if "null" not in _types(spec):
            checks.append(col.is_null())
        if "enum" in spec:
            checks.append(~col.is_in(spec["enum"]))
        if "minLength" in spec:
            checks.append(col.str.len_chars() < spec["minLength"])
        if "pattern" in spec:  # Python's re, as jsonschema: Rust's regex differs on e.g. "\x1c" for \S
            search = re.compile(spec["pattern"]).search
            checks.append(col.map_batches(lambda values, search=search: pl.Series(
                [v is not None and search(v) is None for v in values], dtype=pl.Boolean),
                return_dtype=pl.Boolean, is_elementwise=True))  # elementwise: the streaming engine keeps it streaming
        if polars_schema(kind)[name] == pl.Float64:
            checks.append(~col.is_finite())  # JSON has no NaN or infinity
        for keyword, breaks in (("minimum", col.__lt__), ("maximum", col.__gt__),
                                ("exclusiveMinimum", col.__le__), ("exclusiveMaximum", col.__ge__)):
            if keyword in spec:
                checks.append(breaks(spec[keyword]))
        if checks:
            by_column[name] = pl.any_horizontal([c.fill_null(False) for c in checks])
    return by_column


@cache
def _integer_paths(kind: str) -> tuple[tuple[str, ...], ...]:
    """Where `kind` holds integers, as key paths ("*": every item of an array)."""
    paths = []

    def walk(spec: dict, path: tuple[str, ...]) -> None:
        if "integer" in spec.get("type", ()):  # "integer" or a list of types
            paths.append(path)
        for key, sub in spec.get("properties", {}).items():
            walk(sub, (*path, key))
        if "items" in spec:
            walk(spec["items"], (*path, "*"))

    walk(schema(kind), ())
    return tuple(paths)


def _values_at(value, path: tuple[str, ...], field: str = ""):
    """(field, value) pairs found at a key path of a record."""
    if not path:
        yield field, value
    elif path[0] == "*" and isinstance(value, list):
        for i, item in enumerate(value):
            yield from _values_at(item, path[1:], f"{field}.{i}")
    elif isinstance(value, dict) and path[0] in value:
        yield from _values_at(value[path[0]], path[1:], f"{field}.{path[0]}" if field else path[0])


def _integer_mismatch(record: dict, kind: str) -> tuple[str, object] | None:
    """The first integer an Int64 column cannot hold as polars parses it: JSON Schema calls 1.0 an
    integer, polars does not; nor does polars hold integers beyond 64 bits."""
    for path in _integer_paths(kind):
        for field, value in _values_at(record, path):
            if isinstance(value, float) or isinstance(value, int) and not -2**63 <= value < 2**63:
                return field, value
    return None


def scan_frame(path: str | os.PathLike, kind: str) -> pl.LazyFrame:
    """A validated JSONL artifact as a lazy polars query. Collect with `engine="streaming"` (or sink)
    where the data can grow: the default engine loads every scanned column into memory."""
    for lineno, record in iter_jsonl(path, kind, numbered=True):  # the JSON Schema check; raises file:line:field
        if (mismatch := _integer_mismatch(record, kind)) is not None:
            raise ArtifactError(f"{path}:{lineno}: field '{mismatch[0]}': {mismatch[1]!r} "
                                f"is not a 64-bit integer as written (schema: {kind})")
    return pl.scan_ndjson(path, schema=polars_schema(kind))


def read_frame(path: str | os.PathLike, kind: str) -> pl.DataFrame:
    return scan_frame(path, kind).collect()


def records_frame(records: list[dict], kind: str) -> pl.DataFrame:
    """In-memory records (already shaped like `kind`) as a frame with the schema's dtypes."""
    return pl.DataFrame(records, schema=polars_schema(kind))


def _lossless(have: pl.DataType, want: pl.DataType) -> bool:
    """A cast that keeps every value: nulls to anything, narrower integers to Int64, integers to Float64."""
    if have == want or have == pl.Null:
        return True
    if want == pl.Int64:
        return have in (pl.Int8, pl.Int16, pl.Int32, pl.UInt8, pl.UInt16, pl.UInt32)
    if want == pl.Float64:  # JSON numbers: 3 and 3.0 are the same value (exact up to 2**53)
        return have.is_integer() or have == pl.Float32
    return False


def _conform(frame: pl.LazyFrame, kind: str, path) -> pl.LazyFrame:
    """The frame's columns in schema order and dtypes; a column of another dtype is an error, not a cast."""
    want = polars_schema(kind)
    have = frame.collect_schema()
    missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
    if missing or extra:
        raise ArtifactError(f"{path}: frame columns do not match schema {kind}: missing {missing}, extra {extra}")
    wrong = [f"{c} is {have[c]}, schema {kind} needs {t}" for c, t in want.items() if not _lossless(have[c], t)]
    if wrong:
        raise ArtifactError(f"{path}: frame dtypes do not match: {'; '.join(wrong)}")
    return frame.select(pl.col(c).cast(t) for c, t in want.items())


def _check_row(row: dict, kind: str, where: str) -> None:
    """jsonschema's verdict on one row (it words the error), and no NaN or infinity (it would let them pass)."""
    validate(row, kind, where)
    if (field := non_finite_field(row)) is not None:
        raise ArtifactError(f"{where}: field '{field}': not a finite number (schema: {kind})")


def _check(lazy: pl.LazyFrame, kind: str, path) -> int:
    """Check every row of `lazy` against the schema of `kind`, streaming; returns the row count."""
    if not _vectorized(kind):
        n = 0
        for batch in lazy.collect_batches(chunk_size=10_000, engine="streaming"):
            for row in batch.iter_rows(named=True):
                n += 1
                _check_row(row, kind, f"{path}:{n}")
        return n
    by_column = _violations(kind)
    rows, bad = lazy.with_row_index("_row").select(
        pl.len().alias("rows"), pl.col("_row").filter(pl.any_horizontal(list(by_column.values()))).min().alias("bad")
    ).collect(engine="streaming").row(0)
    if bad is not None:
        row = lazy.slice(bad, 1).collect()
        _check_row(row.row(0, named=True), kind, f"{path}:{bad + 1}")  # words the error; raises
        broken = [c for c, v in row.select(**by_column).row(0, named=True).items() if v]  # if jsonschema let it pass
        raise ArtifactError(f"{path}:{bad + 1}: field '{broken[0]}': breaks schema {kind}")
    return rows


def write_frames(outputs: list[tuple[pl.DataFrame | pl.LazyFrame, str | os.PathLike, str]],
                 check_counts: Callable[[list[int]], None] | None = None) -> list[int]:
    """Check each (frame, path, kind) against its schema and write it as JSONL; returns the row counts.

    All or nothing: every file is checked and written to a temp file first, and renamed into place
    only when all are, so a failure leaves none of them (nor a temp file) behind. `check_counts`
    (the stage's row-count invariant) sees the counts before anything is written."""
    conformed = [(_conform(frame.lazy(), kind, path), Path(path), kind) for frame, path, kind in outputs]
    counts = [_check(lazy, kind, path) for lazy, path, kind in conformed]
    if check_counts is not None:
        check_counts(counts)
    temps = []
    try:
        for lazy, path, _ in conformed:
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
            lazy.sink_ndjson(temps[-1])
            with open(temps[-1], "rb+") as f:
                os.fsync(f.fileno())
        for tmp, (_, path, _) in zip(temps, conformed):
            os.replace(tmp, path)
    finally:
        for tmp in temps:
            tmp.unlink(missing_ok=True)
    return counts


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: str | os.PathLike, kind: str) -> int:
    """Check `frame` against the schema of `kind` and write it as JSONL, atomically. Returns the row count."""
    return write_frames([(frame, path, kind)])[0]
