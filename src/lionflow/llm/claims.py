"""Claims: each request sent once for the whole run (run-wide coordination, part 2).

Before sending a request, a process claims its cache key by hard-linking its presence file
(lionflow.llm.presence) to `claims/<key[:2]>/<key>.<gen>`. link() lets exactly one process win a
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
the answers other processes append (`ResponseCache.refresh`) every POLL_S
(lionflow.llm.pipeline waits so).

Iteration 1's two teacher jobs (train pool and cache pool, the same seeds, as in the paper)
rely on claims, not on sharing at rule level: whichever job claims a seed first pays for it,
the other waits and reads the answer, so the DAG stays as the paper describes it and the same
holds for any pair of jobs that happen to ask the same thing.

Files: `claims/` (one hard link per request ever sent: small, and it says which part file holds
each answer; delete it when no job runs, if ever).
"""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

from .partfiles import read_small
from .presence import Presence

POLL_S = 0.05          # waiters re-read the cache this often (at most; a round costs ~0.1 ms locally)


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
