"""Polars frames of the pipeline's JSONL artifacts, under the same JSON Schemas as `lionflow.artifacts`.

Pools reach 70K-700K instructions; their stages (pool updates, the hard/easy split, joins,
sampling, summary statistics) are polars queries, lazy where the data can grow, so that they
stream with flat memory. The JSON Schema stays the one statement of each artifact's shape:

- reading (`scan_frame`): every record first passes the JSON Schema, streamed through
  `iter_jsonl` (errors name file:line:field); polars then reads the file with dtypes derived
  from the same schema (`polars_schema`).
- writing (`write_frame`): a frame whose columns and dtypes are exactly the derived ones can
  neither miss nor add a key, so the rest of the schema (null where not allowed, enum,
  minLength, pattern, bounds) is checked as column expressions over the whole frame at once;
  the first offending row goes to jsonschema, which words the error with its line and field.
  Kinds outside that subset (arrays, nested objects, optional keys) are checked record by
  record. The file appears atomically: a failed check or crash leaves nothing behind.
"""

from __future__ import annotations

import os
import re
import uuid
from functools import cache
from pathlib import Path

import polars as pl

from .artifacts import ArtifactError, iter_jsonl, schema, validate

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


def _violations(kind: str) -> pl.Expr:
    """True on a row that breaks a keyword of the (flat) schema; nulls compare as no violation."""
    checks = []
    for name, spec in schema(kind)["properties"].items():
        col = pl.col(name)
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
    return pl.any_horizontal([c.fill_null(False) for c in checks])


def scan_frame(path: str | os.PathLike, kind: str) -> pl.LazyFrame:
    """A validated JSONL artifact as a lazy polars query. Collect with `engine="streaming"` (or sink)
    where the data can grow: the default engine loads every scanned column into memory."""
    for _ in iter_jsonl(path, kind):  # the JSON Schema check, streamed; raises file:line:field
        pass
    return pl.scan_ndjson(path, schema=polars_schema(kind))


def read_frame(path: str | os.PathLike, kind: str) -> pl.DataFrame:
    return scan_frame(path, kind).collect()


def records_frame(records: list[dict], kind: str) -> pl.DataFrame:
    """In-memory records (already shaped like `kind`) as a frame with the schema's dtypes."""
    return pl.DataFrame(records, schema=polars_schema(kind))


def _conform(frame: pl.LazyFrame, kind: str, path) -> pl.LazyFrame:
    want = polars_schema(kind)
    have = frame.collect_schema()
    missing, extra = [c for c in want if c not in have], [c for c in have if c not in want]
    if missing or extra:
        raise ArtifactError(f"{path}: frame columns do not match schema {kind}: missing {missing}, extra {extra}")
    return frame.select(pl.col(c).cast(t, strict=True) for c, t in want.items())


def write_frame(frame: pl.DataFrame | pl.LazyFrame, path: str | os.PathLike, kind: str) -> int:
    """Check `frame` against the schema of `kind` and write it as JSONL, atomically. Returns the row count."""
    lazy = _conform(frame.lazy(), kind, path)
    if _vectorized(kind):
        checked = lazy.with_row_index("_row").select(
            pl.len().alias("rows"), pl.col("_row").filter(_violations(kind)).min().alias("bad")
        ).collect(engine="streaming")
        rows, bad = checked.row(0)
        if bad is not None:
            row = lazy.slice(bad, 1).collect().row(0, named=True)
            validate(row, kind, f"{path}:{bad + 1}")  # words the error; raises
            raise ArtifactError(f"{path}:{bad + 1}: breaks schema {kind}: {row}")  # unreachable if both agree
    else:
        rows = 0
        for batch in lazy.collect_batches(chunk_size=10_000, engine="streaming"):
            for rows, row in enumerate(batch.iter_rows(named=True), rows + 1):
                validate(row, kind, f"{path}:{rows}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        lazy.sink_ndjson(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return rows
