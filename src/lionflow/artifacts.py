"""Reading and writing the pipeline's JSONL/JSON artifacts, each checked against its schema.

Every artifact kind has one JSON Schema in ``lionflow/schemas/<kind>.json``; it is applied when
a record is written and again when it is read, so a hand-edited or truncated file fails loudly
with the file, the line and the field. Writes are atomic (temp file + rename): a crash never
leaves a half-written artifact behind.

Pools reach 70K-700K records, so records are streamed (``iter_jsonl``; ``write_jsonl`` writes
as it validates) and validation has a fast path: the same schema compiled to Python code by
fastjsonschema (~20x faster than jsonschema's interpreter). jsonschema stays the authority:
it is consulted whenever the fast path objects, and it words the error.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import fastjsonschema
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


# Keywords that mean the same in fastjsonschema's draft 7 and our schemas' draft 2020-12. A schema
# using any other (prefixItems, $ref, format, ...) gets no fast path rather than a wrong one.
_FAST_KEYWORDS = frozenset({
    "$schema", "$id", "title", "description", "default", "type", "enum", "const", "properties",
    "required", "additionalProperties", "minProperties", "maxProperties", "items", "minItems",
    "maxItems", "uniqueItems", "minLength", "maxLength", "pattern", "minimum", "maximum",
    "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "anyOf", "oneOf", "allOf", "not"})


def _keywords(node: Any):
    if isinstance(node, list):
        for item in node:
            yield from _keywords(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield key
            if key in ("properties", "patternProperties", "$defs", "definitions"):  # keys are names
                for sub in value.values():
                    yield from _keywords(sub)
            elif key not in ("enum", "const", "default", "required"):  # these hold data, not schemas
                yield from _keywords(value)


@cache
def _fast_check(kind: str) -> Callable[[Any], Any] | None:
    s = schema(kind)
    if not set(_keywords(s)) <= _FAST_KEYWORDS:
        return None
    # use_default=False: validation must never fill in the schema's defaults.
    return fastjsonschema.compile(s, use_default=False)


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
    fast_check = _fast_check(kind)
    if fast_check is not None:
        try:
            fast_check(record)
            return
        except fastjsonschema.JsonSchemaValueException:
            pass  # jsonschema decides (the drafts differ in corner cases) and names the field
    error = jsonschema.exceptions.best_match(_validator(kind).iter_errors(record))
    if error is not None:
        raise ArtifactError(f"{where}: field '{_field(error)}': {error.message} (schema: {kind})")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    record = dict(pairs)
    if len(record) != len(pairs):
        seen: set[str] = set()
        raise ValueError(f"duplicate key {next(k for k, _ in pairs if k in seen or seen.add(k))!r}")
    return record


def _finite(text: str) -> float:
    if not math.isfinite(value := float(text)):
        raise ValueError(f"number {text} is out of range")
    return value


def _no_constant(name: str):
    raise ValueError(f"{name} is not JSON")


# Strict JSON, so that every reader (polars scans the same files) sees the same record: Python's
# json alone accepts NaN and Infinity, keeps the last of duplicate keys, and lone surrogates.
_STRICT_JSON = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_float=_finite, parse_constant=_no_constant)
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _decode_line(path, lineno: int, raw: bytes) -> str:
    """One line as text, or an error that says what the file is and what was expected."""
    if lineno == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raise ArtifactError(f"{path}:1: the file starts with a byte order mark (BOM): expected UTF-8 JSONL "
                            "without one (save it as plain UTF-8)")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        hint = " (it looks like UTF-16: save it as UTF-8)" if raw[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        raise ArtifactError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[e.start]:02x} at column {e.start + 1})"
                            f"{hint}: expected UTF-8 JSONL") from None
    if lineno == 1 and line.lstrip().startswith("["):
        raise ArtifactError(f"{path}:1: a JSON array: expected JSONL, one JSON object per line (convert it, e.g. "
                            "`jq -c '.[]' file.json > file.jsonl`)")
    return line


def iter_jsonl(path: str | os.PathLike, kind: str, *, numbered: bool = False) -> Iterator:
    """The validated records of a JSONL artifact, one at a time (memory stays flat).

    numbered=True yields (line number, record) pairs, for errors that name the line.
    """
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            line = _decode_line(path, lineno, raw)
            if not line.strip():
                continue
            try:
                record = _STRICT_JSON.decode(line)
                if _SURROGATE_ESCAPE.search(line):  # a pair decodes to one character; a lone half cannot be encoded
                    json.dumps(record, ensure_ascii=False).encode("utf-8")
            except json.JSONDecodeError as e:
                raise ArtifactError(f"{path}:{lineno}: not valid JSON ({e.msg} at column {e.colno})") from None
            except (ValueError, UnicodeEncodeError) as e:
                reason = "a lone surrogate escape" if isinstance(e, UnicodeEncodeError) else e
                raise ArtifactError(f"{path}:{lineno}: not valid JSON ({reason})") from None
            validate(record, kind, f"{path}:{lineno}")
            yield (lineno, record) if numbered else record


def read_jsonl(path: str | os.PathLike, kind: str) -> list[dict]:
    return list(iter_jsonl(path, kind))


def atomic_write(path: str | os.PathLike, text: str) -> None:
    with AtomicFile(path) as f:
        f.write(text)


class AtomicFile:
    """A temp file beside `path`, renamed onto it on a clean exit and removed on an exception."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def __enter__(self):
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, self._tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        self._file = os.fdopen(fd, "w", encoding="utf-8")
        return self._file

    def __exit__(self, exc_type, exc, tb):
        try:
            if exc_type is None:
                self._file.flush()
                os.fsync(self._file.fileno())
            self._file.close()
            if exc_type is None:
                os.replace(self._tmp, self.path)
        finally:
            Path(self._tmp).unlink(missing_ok=True)


@contextmanager
def atomic_dir(path: str | os.PathLike, *, single_writer: bool = False) -> Iterator[Path]:
    """A temp directory beside `path`, renamed onto it on a clean exit (replacing an old one) and
    removed on an exception: a reader never sees a half-written directory. Its files reach the disk
    before the rename, and it gets the permissions of an ordinary folder. single_writer (a path only
    one process writes, e.g. a training job's checkpoint): first remove the temp directories a killed
    writer left (a kill -9 runs no clean-up)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if single_writer:
        for stale in path.parent.glob(f".{path.name}.*.tmp"):
            shutil.rmtree(stale, ignore_errors=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private
    try:
        yield tmp
        for f in tmp.rglob("*"):
            if f.is_file():
                with open(f, "rb") as fh:
                    os.fsync(fh.fileno())
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def non_finite_field(value, field: str = "") -> str | None:
    """The first NaN or infinite number in a record, as a field path: JSONL has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return field
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, sub in items:
        if (found := non_finite_field(sub, f"{field}.{key}" if field else str(key))) is not None:
            return found
    return None


def _dumps(data, kind: str, where: str, **options) -> str:
    """JSON text of a validated record; NaN and infinity (which JSON Schema lets pass) are errors."""
    try:
        return json.dumps(data, ensure_ascii=False, allow_nan=False, **options)
    except ValueError:
        raise ArtifactError(f"{where}: field '{non_finite_field(data)}': not a finite number (schema: {kind})") from None


class JsonlWriter:
    """Writes validated records one at a time, atomically (memory stays flat at any size).

    with JsonlWriter(path, "instruction") as out: out.write(record)
    An invalid record, or any exception inside the block, leaves no file behind.
    """

    def __init__(self, path: str | os.PathLike, kind: str):
        self.path, self.kind, self.count = path, kind, 0
        self._atomic = AtomicFile(path)

    def __enter__(self) -> JsonlWriter:
        self._file = self._atomic.__enter__()
        return self

    def write(self, record: dict) -> None:
        self.count += 1
        where = f"{self.path}:{self.count}"
        validate(record, self.kind, where)
        self._file.write(_dumps(record, self.kind, where) + "\n")

    def __exit__(self, *exc) -> None:
        self._atomic.__exit__(*exc)


def write_jsonl(path: str | os.PathLike, records: Iterable[dict], kind: str) -> int:
    """Validate and write the records as they come (`records` may be a generator), atomically:
    an invalid record leaves no file behind. Returns the record count."""
    with JsonlWriter(path, kind) as out:
        for record in records:
            out.write(record)
    return out.count


def read_json(path: str | os.PathLike, kind: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
    validate(data, kind, str(path))
    return data


def write_json(path: str | os.PathLike, data: dict, kind: str) -> None:
    validate(data, kind, str(path))
    atomic_write(path, _dumps(data, kind, str(path), indent=2) + "\n")
