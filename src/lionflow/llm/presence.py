"""Presence: which processes sharing one LLM cache directory are alive (run-wide coordination, part 1).

The unit of spending is the run, not the process: Snakemake runs several LLM jobs at once
(`-c2` on one machine, or jobs on several cluster nodes sharing the cache directory over NFS),
and an identical request must be paid once for all of them (lionflow.llm.claims), each
endpoint's RPM/TPM shared between them (lionflow.llm.rate_share), and `llm.budget_usd` held by
their sum (lionflow.llm.ledger). Everything there relies only on operations that are atomic on a
local filesystem and on NFSv3+: link() (fails when the name exists: an exclusive create that
publishes a file complete), rename(), utime(), and files that one process appends to and others
only read (lionflow.llm.partfiles). No SQLite, no fcntl/flock.

Each process has one *presence file* per cache directory, `live/<id>.<n>` (id = host-pid-random),
whose content names the process and its cache part file, and whose mtime a heartbeat thread
refreshes every lease_s / 4. Another process is *dead* when it ran on this host and its pid is
gone, when its presence file is gone, or when the file's mtime has not moved for lease_s of the
observer's own monotonic clock (node clocks need not agree; a process seen for the first time
gets a full lease).

Files: `live/` (presence; claims are hard links to these files, see lionflow.llm.claims).
"""

from __future__ import annotations

import atexit
import json
import os
import threading
import time
from pathlib import Path

from .partfiles import HOST, mtime_ns, parse_process_id, part_name, pid_alive, process_id


def presence_file(holder: str, n: int = 0) -> str:
    """The path of a process's n-th presence file, relative to the cache directory."""
    return f"live/{holder}.{n}"


def holder_info(holder: str) -> dict:
    """What a presence file says about a process, from its id alone."""
    host, pid = parse_process_id(holder)
    return {"holder": holder, "host": host, "pid": pid, "file": presence_file(holder)}


def writer_gone(root: str | os.PathLike, writer: str) -> bool:
    """Whether the process `writer` (a process id) is gone for good: on this host its pid is gone,
    elsewhere its first presence file under `root` is. False for a name that is no process id."""
    parsed = parse_process_id(writer)
    if parsed is None:
        return False
    host, pid = parsed
    return (not pid_alive(pid)) if host == HOST else not (Path(root) / presence_file(writer)).exists()


class _Heartbeat:
    """One daemon thread per process refreshing the mtime of every presence file it holds."""

    def __init__(self):
        self.presences: list[Presence] = []
        self.lock = threading.Lock()
        self.thread: threading.Thread | None = None
        self.pid = os.getpid()

    def add(self, presence: Presence) -> None:
        with self.lock:
            if self.pid != os.getpid():   # forked: the parent's thread did not come along
                self.presences, self.thread, self.pid = [], None, os.getpid()
            self.presences.append(presence)
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="lionflow-heartbeat", daemon=True)
                self.thread.start()

    def remove(self, presence: Presence) -> None:
        with self.lock:
            if presence in self.presences:
                self.presences.remove(presence)

    def _run(self) -> None:
        tick = threading.Event()        # its wait(), not time.sleep: a test that patches sleep must not stop us
        while True:
            with self.lock:
                presences = list(self.presences)
            wait = min((p.lease_s / 4 for p in presences), default=1.0)
            for p in presences:
                try:
                    p.beat()
                except OSError:
                    pass
            tick.wait(wait)


_heartbeat = _Heartbeat()


class Presence:
    """This process in one cache directory: presence files kept fresh, and liveness of others."""

    _registry: dict[tuple[str, int], Presence] = {}

    @classmethod
    def of(cls, root: str | os.PathLike, lease_s: float) -> Presence:
        key = (str(Path(root).resolve()), os.getpid())
        presence = cls._registry.get(key)
        if presence is None or presence.closed:
            presence = cls._registry[key] = cls(root, lease_s)
        presence.lease_s = min(presence.lease_s, lease_s)
        return presence

    def __init__(self, root: str | os.PathLike, lease_s: float):
        self.root = Path(root)
        self.lease_s = lease_s
        self.id = process_id()
        self.pid = os.getpid()
        self.part_name = part_name(self.id)
        (self.root / "live").mkdir(parents=True, exist_ok=True)
        self.files: list[Path] = []
        self.closed = False
        self.in_flight: set[str] = set()       # keys this process holds a claim for and is sending
        self._seen: dict[str, tuple[int, float]] = {}   # presence file -> (mtime, when first seen at it)
        self.new_file()
        _heartbeat.add(self)
        atexit.register(self.close)

    @property
    def file(self) -> Path:
        return self.files[-1]

    @property
    def file_str(self) -> str:
        return self._file_str

    def info(self) -> dict:
        """What this process's member and presence files say about it (for `alive` of others)."""
        return {"holder": self.id, "host": HOST, "pid": self.pid, "file": str(self.file.relative_to(self.root))}

    def new_file(self) -> Path:
        """A fresh presence inode (when the current one has as many links as the filesystem allows)."""
        rel = presence_file(self.id, len(self.files))
        info = {"holder": self.id, "host": HOST, "pid": self.pid, "part": self.part_name, "file": rel}
        fd = os.open(self.root / rel, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, json.dumps(info).encode())
        finally:
            os.close(fd)
        self.files.append(self.root / rel)
        self._file_str = str(self.root / rel)
        return self.root / rel

    def beat(self) -> None:
        for f in self.files:
            try:
                os.utime(f)
            except FileNotFoundError:
                pass

    def close(self) -> None:
        """Gone for good: the presence files go (claims linked to them keep their inode and content)."""
        if self.closed or os.getpid() != self.pid:
            return
        self.closed = True
        _heartbeat.remove(self)
        for f in self.files:
            try:
                os.unlink(f)
            except FileNotFoundError:
                pass

    def alive(self, info: dict, now: float | None = None) -> bool:
        """Whether the process described by a claim or member file (its `info`) still holds its lease."""
        if info.get("holder") == self.id:
            return not self.closed
        if info.get("host") == HOST and not pid_alive(int(info.get("pid", -1))):
            return False
        path = self.root / info["file"]
        mtime = mtime_ns(path)
        if mtime is None:
            return False
        now = time.monotonic() if now is None else now
        seen = self._seen.get(str(path))
        if seen is None or seen[0] != mtime:
            self._seen[str(path)] = (mtime, now)
            return True
        return now - seen[1] < self.lease_s
