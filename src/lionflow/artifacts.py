"""Reading and writing the pipeline's JSONL/JSON artifacts, each checked against its schema.

Every artifact kind has one JSON Schema in ``lionflow/schemas/<kind>.json``; it is applied when
a record is written and again when it is read, so a hand-edited or truncated file fails loudly
with the file, the line and the field. Writes are atomic (temp file + rename): a crash never
leaves a half-written artifact behind.
"""

from __future__ import annotations

import json
import os
import tempfile
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Iterable

import jsonschema


class ArtifactError(ValueError):
    """Bad artifact content; the message names the file, the line and the field."""


@cache
def schema(kind: str) -> dict:
    return json.loads(resources.files("lionflow.schemas").joinpath(f"{kind}.json").read_text())


@cache
def _validator(kind: str) -> jsonschema.protocols.Validator:
    s = schema(kind)
    cls = jsonschema.validators.validator_for(s)
    return cls(s, format_checker=cls.FORMAT_CHECKER)


def _field(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        # jsonschema reports a missing key at the parent; name the key itself.
        missing = [k for k in error.validator_value if k not in error.instance]
        path = list(error.absolute_path) + missing[:1]
    else:
        path = list(error.absolute_path)
    return ".".join(str(p) for p in path) or "<record>"


def validate(record: Any, kind: str, where: str) -> None:
    """Raise ArtifactError naming `where` (file:line) and the offending field."""
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(record))
    if error is not None:
        raise ArtifactError(f"{where}: field '{_field(error)}': {error.message} (schema: {kind})")


def read_jsonl(path: str | os.PathLike, kind: str) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            validate(record, kind, f"{path}:{lineno}")
            records.append(record)
    return records


def _atomic_write(path: str | os.PathLike, text: str) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_jsonl(path: str | os.PathLike, records: Iterable[dict], kind: str) -> int:
    """Validate every record first, then write the file atomically. Returns the record count."""
    records = list(records)
    for i, record in enumerate(records, 1):
        validate(record, kind, f"{path}:{i}")
    _atomic_write(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return len(records)


def read_json(path: str | os.PathLike, kind: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    validate(data, kind, str(path))
    return data


def write_json(path: str | os.PathLike, data: dict, kind: str) -> None:
    validate(data, kind, str(path))
    _atomic_write(path, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
