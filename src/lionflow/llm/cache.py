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
answers another job paid for while it runs (see lionflow.llm.shared). Besides answers, a part
may hold release records (`{"key": ..., "released": true}`): a process gave up a claim unanswered.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from pathlib import Path

from .shared import HOST, _pid_alive, process_id

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


class ResponseCache:
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
        self.part_name = f"part-{process_id()}.jsonl"
        self._dir = str(self.dir)
        self._part = f"{self._dir}/{self.part_name}"
        self._entries: dict[str, dict] | None = None
        self._offsets: dict[str, int] = {}
        self._lines: dict[str, int] = {}          # complete lines read per part (for the line numbers of damage)
        self.damaged: list[tuple[str, int, str]] = []   # (path, line, reason) of records that could not be read
        self._finished: set[str] = set()          # parts whose writer is gone: read in full, never grow
        self._checked: dict[str, float] = {}
        self._released: list[str] = []            # keys other processes released unanswered, not yet taken
        self._wrote = False
        self._repaired = False

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = {}
            self.refresh()
        return self._entries

    def refresh(self, also=(), listing: bool = True) -> int:
        """Read what writers appended since the last read: every part file listed (listing), and
        `also` (part files named by claims, read even before a listing shows them); returns the
        number of new records."""
        if self._entries is None:
            self._entries = {}
        names = set(also)
        if listing:
            names.update(n for n in os.listdir(self.dir) if n.startswith("part-") and n.endswith(".jsonl"))
        return sum(self._tail(name) for name in names if name not in self._finished)

    def _tail(self, name: str) -> int:
        try:
            f = open(f"{self._dir}/{name}", "rb")
        except FileNotFoundError:
            return 0
        with f:
            size = os.fstat(f.fileno()).st_size
            offset = self._offsets.get(name, 0)
            data = b""
            if size > offset:
                f.seek(offset)
                data = f.read(size - offset)
        end = data.rfind(b"\n") + 1       # a torn tail line is read once it is complete (if ever)
        new, lineno = 0, self._lines.get(name, 0)
        for line in data[:end].split(b"\n")[:-1]:
            lineno += 1
            if not line.strip():
                continue
            reason = damaged_reason(line)
            if reason is not None:
                self._report_damage(name, lineno, reason)
                continue
            entry = json.loads(line)
            key = entry["key"]
            new += 1
            if "released" in entry:
                if name != self.part_name:
                    self._released.append(key)
            else:
                self._entries[key] = entry
        self._offsets[name] = offset + end
        self._lines[name] = lineno
        if not data and name != self.part_name:
            self._check_finished(name)
        return new

    def _report_damage(self, name: str, lineno: int, reason: str) -> None:
        path = f"{self._dir}/{name}"
        self.damaged.append((path, lineno, reason))
        if len(self.damaged) <= 10:
            log.warning("damaged LLM cache record %s:%d: %s; its request, if asked again, is paid again",
                        path, lineno, reason)

    def _check_finished(self, name: str) -> None:
        now = time.monotonic()
        if now - self._checked.get(name, -1e9) < FINISHED_CHECK_S:
            return
        self._checked[name] = now
        writer = name[len("part-"):-len(".jsonl")]
        try:
            host, pid, _ = writer.rsplit("-", 2)
            pid = int(pid)
        except ValueError:
            return
        gone = (not _pid_alive(pid)) if host == HOST else not (self.dir / "live" / f"{writer}.0").exists()
        if gone:
            self._tail(name)              # anything written just before it went
            self._finished.add(name)

    def take_released(self) -> list[str]:
        released, self._released = self._released, []
        return released

    def __len__(self) -> int:
        return len(self._load())

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def put(self, key: str, entry: dict) -> None:
        entry = {"key": key, **entry, "created": time.time()}
        self._append(json.dumps(entry, ensure_ascii=False) + "\n")
        self._load()[key] = entry

    def put_release(self, key: str) -> None:
        """Record that this process gave up its claim on `key` unanswered (waiters take over)."""
        self._append(json.dumps({"key": key, "released": True, "t": time.time()}) + "\n")

    def _append(self, line: str) -> None:
        try:
            self._write(line)
        except OSError as e:
            raise CacheUnwritable(e.errno or errno.EIO, f"cannot store an answer in the LLM response cache "
                                  f"{self._part} ({e.strerror or e}); the stage stops before paying for more") from None

    def _write(self, line: str) -> None:
        fd = os.open(self._part, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if not self._repaired:        # a torn line left by a killed writer must not swallow ours
                self._repaired = True
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    line = "\n" + line
            os.write(fd, line.encode("utf-8"))
        finally:
            os.close(fd)                  # close-to-open: visible to other NFS clients that open it next
        self._wrote = True

    def close(self) -> None:
        if self._wrote:
            self._wrote = False
            fd = os.open(self._part, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
