"""Run-wide coordination between the processes (and nodes) that share one LLM cache directory.

The unit of spending is the run, not the process: Snakemake runs several LLM jobs at once
(`-c2` on one machine, or jobs on several cluster nodes sharing the cache directory over NFS),
and an identical request must be paid once for all of them, each endpoint's RPM/TPM shared
between them, and `llm.budget_usd` held by their sum. Everything here relies only on
operations that are atomic on a local filesystem and on NFSv3+: link() (fails when the name
exists: an exclusive create that publishes a file complete), rename(), utime(), and files that
one process appends to and others only read. No SQLite, no fcntl/flock.

Presence. Each process has one *presence file* per cache directory, `live/<id>.<n>` (id =
host-pid-random), whose content names the process and its cache part file, and whose mtime a
heartbeat thread refreshes every lease_s / 4. Another process is *dead* when it ran on this
host and its pid is gone, when its presence file is gone, or when the file's mtime has not
moved for lease_s of the observer's own monotonic clock (node clocks need not agree; a process
seen for the first time gets a full lease).

Claims (exactly once). Before sending a request, a process claims its cache key by hard-linking
its presence file to `claims/<key[:2]>/<key>.<gen>`. link() lets exactly one process win a
name, like an O_CREAT|O_EXCL create, and more: the claim appears with its content (no window
where it exists empty), and the claim *is* the claimant's presence inode, so one heartbeat (one
utime) keeps the lease of every claim it holds, and the claim names the part file where the
answer will appear. (The filesystem must support hard links: ext4, xfs, NFS, Lustre, GPFS do.) A claim of
generation g is taken over only when its holder is dead and its part file lacks the answer,
by linking generation g + 1 (again exactly one winner). A holder that gets its answer appends
it to its part file and leaves the claim in place (the claim tells later arrivals where the
answer is, even when a network filesystem lists the new part file late); one that fails
unlinks its claim and appends a release record, so that waiters take over at once.
Generations advance only past dead holders, so without a lease lost by a live process there is
never more than one live holder, and a key is sent once. (A holder that stalls for more than
lease_s, then wakes and sends, may duplicate its successor: the price of leases.) Waiters read
the answers other processes append (`ResponseCache.refresh`) every POLL_S.

Iteration 1's two teacher jobs (train pool and cache pool, the same seeds, as in the paper)
rely on claims, not on sharing at rule level: whichever job claims a seed first pays for it,
the other waits and reads the answer, so the DAG stays as the paper describes it and the same
holds for any pair of jobs that happen to ask the same thing.

Shared limits. `SharedShare` splits an endpoint's RPM/TPM equally between the jobs sending to
it at the moment: each job registers a member file under `limits/<endpoint>/` while it sends
and re-counts the live members every REFRESH_S; a newcomer that finds others waits 1.5 x
REFRESH_S before its first request, so that they have lowered their rate first. A 429's
Retry-After is written to `limits/<endpoint>/pause`, and every member honours it. A job that
has nothing left to send but answers to wait for leaves, so that the others get its share.
Caveat on NFS: a new member file reaches the directory listings of other nodes only when their
cached directory attributes expire (`acdirmin`, 30 s by default), so jobs starting on different
nodes may run at more than the limit until then; mount the cache with `acdirmin=1` (or
`noac`) where several nodes share an endpoint's limits. Claims and the budget do not depend on
listings: link() decides on the server.

Files: `live/` (presence), `claims/` (one hard link per request ever sent: small, and it says
which part file holds each answer; delete it when no job runs, if ever), `limits/`.
"""

from __future__ import annotations

import atexit
import errno
import hashlib
import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from ..artifacts import atomic_write

HOST = socket.gethostname()
POLL_S = 0.05          # waiters re-read the cache this often (at most; a round costs ~0.1 ms locally)
REFRESH_S = 0.5        # shared limits re-count their members this often
_ids: dict[int, str] = {}


def process_id() -> str:
    """This process's id: host-pid-random (names its presence, cache part and ledger files)."""
    if os.getpid() not in _ids:
        _ids[os.getpid()] = f"{HOST}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    return _ids[os.getpid()]


def holder_info(holder: str) -> dict:
    """What a presence file says about a process, from its id alone."""
    host, pid, _ = holder.rsplit("-", 2)
    return {"holder": holder, "host": host, "pid": int(pid), "file": f"live/{holder}.0"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def read_small(path: Path) -> bytes | None:
    """The content of a small file, or None when it does not exist (an open revalidates it on NFS)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return None
    try:
        return os.read(fd, 65536)
    finally:
        os.close(fd)


def _mtime_ns(path: Path) -> int | None:
    try:
        fd = os.open(path, os.O_RDONLY)   # open, then fstat: on NFS the open revalidates cached attributes
    except FileNotFoundError:
        return None
    try:
        return os.fstat(fd).st_mtime_ns
    finally:
        os.close(fd)


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
        self.part_name = f"part-{self.id}.jsonl"
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

    def new_file(self) -> Path:
        """A fresh presence inode (when the current one has as many links as the filesystem allows)."""
        rel = f"live/{self.id}.{len(self.files)}"
        info = {"holder": self.id, "host": HOST, "pid": os.getpid(), "part": self.part_name, "file": rel}
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
        if self.closed or os.getpid() != int(self.id.rsplit("-", 2)[1]):
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
        if info.get("host") == HOST and not _pid_alive(int(info.get("pid", -1))):
            return False
        path = self.root / info["file"]
        mtime = _mtime_ns(path)
        if mtime is None:
            return False
        now = time.monotonic() if now is None else now
        seen = self._seen.get(str(path))
        if seen is None or seen[0] != mtime:
            self._seen[str(path)] = (mtime, now)
            return True
        return now - seen[1] < self.lease_s


class Claims:
    """Claims on cache keys (see the module docstring): at most one live holder per key."""

    def __init__(self, cache, presence: Presence):
        self.cache = cache
        self.presence = presence
        self.dir = Path(cache.dir) / "claims"
        self._dir = str(self.dir)

    def path(self, key: str, gen: int) -> str:
        return f"{self._dir}/{key[:2]}/{key}.{gen}"     # (a str: pathlib costs more than the link itself)

    def claim(self, key: str) -> tuple[str, object]:
        """('mine', gen): send it; ('cached', None): the answer is in the cache now;
        ('held', info): another live process holds it (wait for its answer or release)."""
        gen = 0
        while True:
            path = self.path(key, gen)
            try:
                os.link(self.presence.file_str, path)
                self.presence.in_flight.add(key)
                return "mine", gen
            except FileExistsError:
                pass
            except FileNotFoundError:
                if os.path.isdir(os.path.dirname(path)):
                    self.presence.new_file()     # our presence file went missing: a new one
                else:
                    os.makedirs(os.path.dirname(path), exist_ok=True)
                continue
            except OSError as e:
                if e.errno != errno.EMLINK:
                    raise
                self.presence.new_file()         # this inode has all the links it may have: a new one
                continue
            data = read_small(path)
            if data is None:
                continue                         # released just now: try the same generation again
            info = json.loads(data)
            # Answered already? The claim names the part file where its holder writes the answer.
            self.cache.refresh(also=(info["part"],), listing=False)
            if self.cache.get(key) is not None:
                return "cached", None
            if info["holder"] == self.presence.id:
                if key in self.presence.in_flight:
                    return "held", info
            elif self.presence.alive(info):
                return "held", info
            gen += 1                             # a dead holder (or an earlier call of ours) left it unanswered

    def release(self, key: str, gen: int, answered: bool) -> None:
        """Done with a claim. Answered: the claim stays (it says where the answer is). Not answered
        (a failure, a stop): it goes, and a release record tells the waiters to take over."""
        self.presence.in_flight.discard(key)
        if answered:
            return
        try:
            os.unlink(self.path(key, gen))
        except FileNotFoundError:
            pass
        self.cache.put_release(key)


def endpoint_key(base_url: str, name: str) -> str:
    return hashlib.sha256(f"{name}\n{base_url.rstrip('/')}".encode()).hexdigest()[:16]


class SharedShare:
    """This job's share (1/N) of an endpoint's limits, N = live jobs sending to it (see the docstring)."""

    def __init__(self, root: str | os.PathLike, endpoint: str, presence: Presence):
        self.dir = Path(root) / "limits" / endpoint
        self.dir.mkdir(parents=True, exist_ok=True)
        self.presence = presence
        self.name = f"{presence.id}-{uuid.uuid4().hex[:6]}"
        self._info: dict[str, dict | None] = {}
        self.joined = False

    def join(self) -> int:
        """Register as a sender; returns the number of senders seen (this one included)."""
        info = {"holder": self.presence.id, "host": HOST, "pid": os.getpid(),
                "file": str(self.presence.file.relative_to(self.presence.root))}
        atomic_write(self.dir / self.name, json.dumps(info))
        self.joined = True
        return self.members()

    def leave(self) -> None:
        if self.joined:
            self.joined = False
            try:
                os.unlink(self.dir / self.name)
            except FileNotFoundError:
                pass

    def members(self) -> int:
        now, count = time.monotonic(), 0
        for name in os.listdir(self.dir):
            if name.startswith(".") or name == "pause":
                continue
            if name == self.name:
                count += 1
                continue
            if name not in self._info:
                data = read_small(self.dir / name)
                self._info[name] = json.loads(data) if data else None
            info = self._info[name]
            if info and self.presence.alive(info, now):
                count += 1
            elif info and info.get("host") == HOST and not _pid_alive(int(info["pid"])):
                try:
                    os.unlink(self.dir / name)    # certainly dead: tidy up
                except FileNotFoundError:
                    pass
        return max(count, 1)

    def post_pause(self, seconds: float) -> None:
        """Tell every member to hold its requests for `seconds` (a 429's Retry-After)."""
        atomic_write(self.dir / "pause", str(time.time() + seconds))

    def pause_left(self) -> float:
        data = read_small(self.dir / "pause")
        try:
            return float(data) - time.time() if data else 0.0
        except ValueError:
            return 0.0
