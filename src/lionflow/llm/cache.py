"""A persistent, crash-safe cache of LLM responses, so that no request is ever paid for twice.

Layout: a directory of append-only JSONL "part" files, one per writing process
(`part-<host>-<pid>-<random>.jsonl`). A process appends one complete line per answer the moment
it arrives (a single O_APPEND write, the file opened and closed around it so that other nodes
of a network filesystem see it: close-to-open), so a kill -9 loses at most the requests in
flight, and concurrent Snakemake jobs never write to the same file (no locks needed, which
shared filesystems such as NFS handle badly). A torn last line of a killed writer is ignored on
reading; any other line that is not a whole record (a damaged disk block, a file edited by hand,
bytes that are not UTF-8) is reported with its path and line (`damaged`, a warning in the job's
log): its request will be paid again, and the user is told so. `refresh()` reads what other processes appended since the last read, so a job sees
answers another job paid for while it runs (see lionflow.llm.claims). Besides answers, a part
may hold release records (`{"key": ..., "released": true}`): a process gave up a claim unanswered.
"""

from __future__ import annotations

import binascii
import errno
import hashlib
import json
import logging
import os
import re
import time
from pathlib import Path

from ..artifacts import AtomicFile
from .partfiles import PartFile, part_name, part_writer, process_id
from .presence import writer_gone

log = logging.getLogger(__name__)

FINISHED_CHECK_S = 5.0   # how often a part file that stopped growing is checked for a writer gone for good


def request_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    """Identity of a request: where it goes, the model, the messages and every sampling parameter."""
    canonical = json.dumps(
        {"base_url": base_url.rstrip("/"), "model": model, "messages": messages, "params": params},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class CacheUnwritable(OSError):
    """The cache directory cannot hold an answer: nothing more may be paid for."""


def damaged_reason(line: bytes) -> str | None:
    """Why a cache line is not a whole record (None: it is one)."""
    try:
        entry = json.loads(line)
    except UnicodeDecodeError as e:
        return f"not UTF-8 (byte 0x{line[e.start]:02x} at column {e.start + 1})"
    except ValueError as e:
        return f"not JSON ({e})"
    if not isinstance(entry, dict) or not isinstance(entry.get("key"), str):
        return "a record without a request key"
    if "released" not in entry and not (isinstance(entry.get("content"), str)
                                        and isinstance(entry.get("finish_reason"), str)):
        return "an answer without content or finish_reason"
    return None


# A record as put() writes it: its key first. Scanning for these lines (C speed) indexes a part
# file without parsing its answers; an answer is parsed, and checked, when it is looked up.
_RECORD = re.compile(rb'^\{"key": "([\x21\x23-\x5b\x5d-\x7e]+)"(, "released": true)?[^\n]*\}\n', re.M)
_CHUNK = 16 << 20          # a part file is indexed this many bytes at a time: memory stays flat
_LOCATION = (1 << 64) - 1  # offset << 24 | length, without the part number
INDEX_VERSION = "lionflow-cache-index-1"


def _slot(key: str | bytes) -> bytes | str:
    """A key as the index holds it: a sha256 hex digest (every request key) as its 32 bytes (half the
    memory of the string), any other key as a string."""
    if len(key) == 64:
        try:
            return binascii.unhexlify(key)
        except (binascii.Error, ValueError):
            pass
    return key.decode() if isinstance(key, bytes) else key


class _NoIndex(Exception):
    """A part holding a key that the index format cannot hold (white space): it is scanned each time."""


class ResponseCache:
    """The cache of one process: an index (request key -> part file, offset, length) of every
    answer every process has appended, built by scanning the part files, and the answers read
    from disk when asked for. Memory grows with the number of answers (about 150 bytes each), not
    with their text."""

    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / f".probe-{process_id()}"
            probe.write_bytes(b"x")
            probe.unlink()
        except OSError as e:
            raise CacheUnwritable(e.errno or errno.EIO, f"the LLM response cache {self.dir} (llm.cache_dir) cannot be "
                                  f"written ({e.strerror or e}); nothing was sent, since an answer that cannot be "
                                  "stored would be paid for again") from None
        self.part_name = part_name(process_id())
        self._dir = str(self.dir)
        self._part = f"{self._dir}/{self.part_name}"
        self._index: dict[str, int] | None = None  # key -> part number << 64 | offset << 24 | length
        self._parts: list[str] = []                # part number -> file name
        self._part_no: dict[str, int] = {}
        self._offsets: dict[str, int] = {}
        self._lines: dict[str, int] = {}          # complete lines read per part (for the line numbers of damage)
        self.damaged: list[tuple[str, int, str]] = []   # (path, line, reason) of records that could not be read
        self._finished: set[str] = set()          # parts whose writer is gone: read in full, never grow
        self._checked: dict[str, float] = {}
        self._released: list[str] = []            # keys other processes released unanswered, not yet taken
        self._collect = None                      # the index file of a finished part being read
        self._collect_damage: list = []
        self._collect_failed = False
        self._wrote = False
        self._own = PartFile(self._part)

    def _load(self) -> dict[str, int]:
        if self._index is None:
            self._index = {}
            self.refresh()
        return self._index

    def refresh(self, also=(), listing: bool = True) -> int:
        """Read what writers appended since the last read: every part file listed (listing), and
        `also` (part files named by claims, read even before a listing shows them); returns the
        number of new records."""
        if self._index is None:
            self._index = {}
        names = set(also)
        if listing:
            names.update(n for n in os.listdir(self.dir) if n.startswith("part-") and n.endswith(".jsonl"))
        new = 0
        for name in sorted(names - self._finished):
            if name not in self._offsets and name != self.part_name and self._writer_gone(name):
                new += self._load_finished(name)
            else:
                new += self._tail(name)
        return new

    # A part whose writer is gone never changes again: the first process to read it in full saves
    # its index (`index/<part>.idx`: "<key> <offset << 24 | length>" per answer, then the damaged
    # lines, then a trailer with the part's size), and every later job loads that instead of
    # scanning the answers.
    def _load_finished(self, name: str) -> int:
        idx = self.dir / "index" / f"{name}.idx"
        try:
            size = os.stat(f"{self._dir}/{name}").st_size
            data = idx.read_bytes()
        except FileNotFoundError:
            data = b""
        body, _, trailer = data.rpartition(b"!end ")
        fields = trailer.decode(errors="replace").split()
        if len(fields) != 3 or fields[0] != INDEX_VERSION or fields[1] != str(size):
            return self._index_finished(name, idx)
        pairs, _, damaged = body.partition(b"!damaged\n")
        tokens = pairs.split()
        part, keys = self._number(name) << 64, tokens[0::2]
        try:   # request keys are sha256 hex digests: held as their 32 bytes
            slots = list(map(binascii.unhexlify, keys)) if all(len(k) == 64 for k in keys) else None
        except binascii.Error:
            slots = None
        self._index.update(zip(slots or map(_slot, keys), [part | w for w in map(int, tokens[1::2])]))
        for line in damaged.splitlines():  # reported by every job that reads the part
            lineno, _, reason = line.partition(b" ")
            self._report_damage(name, int(lineno), reason.decode())
        self._offsets[name] = int(fields[2])   # a torn last line stays unread
        self._finished.add(name)
        return len(tokens) // 2

    def _index_finished(self, name: str, idx: Path) -> int:
        """Scan a finished part, writing its index as it goes (memory stays flat)."""
        new = 0
        try:
            with AtomicFile(idx) as f:
                self._collect, self._collect_damage, self._collect_failed = f, [], False
                try:
                    new = self._tail(name)
                finally:
                    self._collect = None
                if self._collect_failed:
                    raise _NoIndex
                f.write("!damaged\n" + "".join(f"{n} {' '.join(r.split())}\n" for n, r in self._collect_damage)
                        + f"!end {INDEX_VERSION} {os.stat(f'{self._dir}/{name}').st_size} {self._offsets[name]}\n")
        except _NoIndex:
            pass
        except OSError as e:   # no index (a read-only cache, a full disk): this job scans the rest itself
            log.info("no index saved for the cache part %s (%s)", name, e)
            new += self._tail(name)
        self._finished.add(name)
        return new

    def _number(self, name: str) -> int:
        if name not in self._part_no:
            self._part_no[name] = len(self._parts)
            self._parts.append(name)
        return self._part_no[name]

    def _tail(self, name: str) -> int:
        try:
            f = open(f"{self._dir}/{name}", "rb")
        except FileNotFoundError:
            return 0
        new, grew = 0, False
        with f:
            size = os.fstat(f.fileno()).st_size
            offset = self._offsets.get(name, 0)
            chunk = _CHUNK
            while size > offset:
                f.seek(offset)
                data = f.read(min(chunk, size - offset))
                end = data.rfind(b"\n") + 1   # a torn tail line is read once it is complete (if ever)
                if not end:
                    if offset + len(data) >= size:
                        break
                    chunk *= 2                 # a line longer than the chunk
                    continue
                new += self._scan(name, data[:end], offset)
                offset += end
                grew = True
            self._offsets[name] = offset
        if not grew and name != self.part_name:
            self._check_finished(name)
        return new

    def _scan(self, name: str, data: bytes, base: int) -> int:
        """Index the complete lines `data` (read at offset `base` of part `name`)."""
        index, part, lineno = self._index, self._number(name) << 64, self._lines.get(name, 0)
        own = name == self.part_name
        new = pos = 0
        for m in _RECORD.finditer(data):
            start, end = m.span()
            if start != pos:
                self._damaged_span(name, data, base, pos, start, lineno)
            if m.group(2):
                if not own:
                    self._released.append(m.group(1).decode())
            else:
                raw = m.group(1)
                index[_slot(raw)] = where = part | (base + start) << 24 | (end - start)
                if self._collect is not None:
                    self._collect.write(f"{raw.decode()} {where & _LOCATION}\n")
            new += 1
            pos = end
        if pos != len(data):
            self._damaged_span(name, data, base, pos, len(data), lineno)
        self._lines[name] = lineno + data.count(b"\n")
        return new

    def _damaged_span(self, name: str, data: bytes, base: int, start: int, end: int, lineno: int) -> None:
        """Lines between records that do not start as put() writes them: parsed one by one (a valid
        record is indexed, a damaged one reported with its line; blank lines are ignored)."""
        first = lineno + data.count(b"\n", 0, start) + 1
        pos = start
        for i, line in enumerate(data[start:end].split(b"\n")[:-1]):
            if line.strip():
                reason = damaged_reason(line)
                if reason is not None:
                    self._report_damage(name, first + i, reason)
                else:
                    entry = json.loads(line)
                    if "released" in entry:
                        if name != self.part_name:
                            self._released.append(entry["key"])
                    else:
                        where = (base + pos) << 24 | (len(line) + 1)
                        self._index[_slot(entry["key"])] = self._number(name) << 64 | where
                        if self._collect is not None:
                            self._collect.write(f"{entry['key']} {where}\n")
                            self._collect_failed |= len(entry["key"].split()) != 1 or entry["key"].startswith("!")
            pos += len(line) + 1

    def _read(self, key: str, where: int) -> dict | None:
        name = self._parts[where >> 64]
        offset, length = (where >> 24) & ((1 << 40) - 1), where & ((1 << 24) - 1)
        with open(f"{self._dir}/{name}", "rb") as f:
            f.seek(offset)
            line = f.read(length)
        reason = damaged_reason(line)
        if reason is None:
            entry = json.loads(line)
            if entry["key"] == key:
                return entry
            reason = "a record at an offset another one was indexed at (the file was rewritten)"
        del self._index[_slot(key)]
        with open(f"{self._dir}/{name}", "rb") as f:
            lineno = f.read(offset).count(b"\n") + 1
        self._report_damage(name, lineno, reason)
        return None

    def take_released(self) -> list[str]:
        released, self._released = self._released, []
        return released

    def __len__(self) -> int:
        return len(self._load())

    def __contains__(self, key: str) -> bool:
        return _slot(key) in self._load()

    def get(self, key: str) -> dict | None:
        where = self._load().get(_slot(key))
        return None if where is None else self._read(key, where)

    def put(self, key: str, entry: dict) -> None:
        entry = {"key": key, **entry, "created": time.time()}
        self._append(json.dumps(entry, ensure_ascii=False) + "\n")
        self._load()
        self.refresh(also=(self.part_name,), listing=False)   # indexes the line just written

    def put_release(self, key: str) -> None:
        """Record that this process gave up its claim on `key` unanswered (waiters take over)."""
        self._append(json.dumps({"key": key, "released": True, "t": time.time()}) + "\n")

    def _report_damage(self, name: str, lineno: int, reason: str) -> None:
        if self._collect is not None:
            self._collect_damage.append((lineno, reason))
        path = f"{self._dir}/{name}"
        self.damaged.append((path, lineno, reason))
        if len(self.damaged) <= 10:
            log.warning("damaged LLM cache record %s:%d: %s; its request, if asked again, is paid again",
                        path, lineno, reason)

    def _writer_gone(self, name: str) -> bool:
        return writer_gone(self.dir, part_writer(name))

    def _check_finished(self, name: str) -> None:
        now = time.monotonic()
        if now - self._checked.get(name, -1e9) < FINISHED_CHECK_S:
            return
        self._checked[name] = now
        if self._writer_gone(name):
            self._tail(name)              # anything written just before it went
            self._finished.add(name)

    def _append(self, line: str) -> None:
        try:
            self._write(line)
        except OSError as e:
            raise CacheUnwritable(e.errno or errno.EIO, f"cannot store an answer in the LLM response cache "
                                  f"{self._part} ({e.strerror or e}); the stage stops before paying for more") from None

    def _write(self, line: str) -> None:
        self._own.append(line.encode("utf-8"))
        self._wrote = True

    def close(self) -> None:
        if self._wrote:
            self._wrote = False
            self._own.sync()
