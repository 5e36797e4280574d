"""Part files: one append-only file per writing process, named by the process's id.

The response cache, the ledger and the presence files of lionflow.llm share one layout that needs
no locks (which shared filesystems such as NFS handle badly): each process writes only files
named by its own id (`host-pid-random`), appends one complete line per record, and others only
read. This module holds what that layout needs: the process id and its parsing, whether a process
of this host is still running, an appender that repairs the torn last line of a killed writer,
and reads that revalidate on NFS.
"""

from __future__ import annotations

import os
import socket
import uuid

HOST = socket.gethostname()
_ids: dict[int, str] = {}


def process_id() -> str:
    """This process's id: host-pid-random (names its presence, cache part and ledger files)."""
    if os.getpid() not in _ids:
        _ids[os.getpid()] = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return _ids[os.getpid()]


def parse_process_id(pid_text: str) -> tuple[str, int] | None:
    """(host, pid) of a process id, or None when `pid_text` is not one."""
    try:
        host, pid, _ = pid_text.rsplit("-", 2)
        return host, int(pid)
    except ValueError:
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with this pid exists."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def part_name(writer: str, tag: str = "") -> str:
    """The name of a writer's part file: part-<process id>.jsonl, or part-<process id>-<tag>.jsonl."""
    return f"part-{writer}-{tag}.jsonl" if tag else f"part-{writer}.jsonl"


def part_writer(name: str, tagged: bool = False) -> str:
    """The process id in a part file's name (tagged: the name ends in -<tag>, as `part_name` with a tag)."""
    writer = name[len("part-"):-len(".jsonl")]
    return writer.rsplit("-", 1)[0] if tagged else writer


def _open_and(path: str | os.PathLike, use):
    """use(fd) of the file opened for reading (on NFS the open revalidates its cached attributes), or None
    when it does not exist."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return use(fd)
    finally:
        os.close(fd)


def read_small(path: str | os.PathLike) -> bytes | None:
    """The content of a small file, or None when it does not exist."""
    return _open_and(path, lambda fd: os.read(fd, 65536))


def mtime_ns(path: str | os.PathLike) -> int | None:
    """A file's mtime, or None when it does not exist."""
    return _open_and(path, lambda fd: os.fstat(fd).st_mtime_ns)


class PartFile:
    """This process's append-only part file. Each `append` is one O_APPEND write of complete lines, the
    file opened and closed around it (close-to-open: other NFS clients that open it next see it); the
    first append of this object starts on a fresh line when a killed writer left a torn one."""

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)
        self._repaired = False

    def append(self, data: bytes) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            if not self._repaired:        # a torn line left by a killed writer must not swallow ours
                self._repaired = True
                size = os.fstat(fd).st_size
                if size and os.pread(fd, 1, size - 1) != b"\n":
                    data = b"\n" + data
            os.write(fd, data)
        finally:
            os.close(fd)

    def sync(self) -> None:
        """What was appended reaches the disk."""
        fd = os.open(self.path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def __fspath__(self) -> str:
        return self.path

