"""Rate shares: an endpoint's RPM/TPM split between the jobs sending to it (run-wide coordination, part 3).

`RateShare` splits an endpoint's RPM/TPM equally between the jobs sending to it at the moment:
each job registers a member file under `limits/<endpoint>/` while it sends and re-counts the live
members (lionflow.llm.presence) every REFRESH_S; a newcomer that finds others waits 1.5 x
REFRESH_S before its first request, so that they have lowered their rate first
(lionflow.llm.limiter). A 429's Retry-After is written to `limits/<endpoint>/pause`, and every
member honours it. A job that has nothing left to send but answers to wait for leaves, so that
the others get its share.

Caveat on NFS: a new member file reaches the directory listings of other nodes only when their
cached directory attributes expire (`acdirmin`, 30 s by default), so jobs starting on different
nodes may run at more than the limit until then; mount the cache with `acdirmin=1` (or
`noac`) where several nodes share an endpoint's limits. Claims and the budget do not depend on
listings: link() decides on the server.

Files: `limits/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from pathlib import Path

from ..artifacts import atomic_write
from .partfiles import HOST, pid_alive, read_small
from .presence import Presence

REFRESH_S = 0.5        # shared limits re-count their members this often


def endpoint_key(base_url: str, name: str) -> str:
    return hashlib.sha256(f"{name}\n{base_url.rstrip('/')}".encode()).hexdigest()[:16]


class RateShare:
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
        atomic_write(self.dir / self.name, json.dumps(self.presence.info()))
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
            elif info and info.get("host") == HOST and not pid_alive(int(info["pid"])):
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
