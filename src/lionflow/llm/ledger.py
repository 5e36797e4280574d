"""Estimated spending: a price table, and a budget shared by every process writing one ledger.

The ledger is a directory of append-only JSONL part files, one per writing process (the same
crash-safe, lock-free layout as the response cache, so it works on NFS/Lustre): one line per
paid request with its tokens, cost, and the model and system_fingerprint the endpoint answered
with. `spent()` re-reads every process's lines at most every `refresh_s`.

The budget holds for the sum of all processes through an *allowance log*: `allowance/<n>`,
n = 0, 1, 2, ..., each entry published complete and exclusively by link() (exactly one process
writes entry n). An entry grants a process some dollars (or returns what it did not use). A
process sends a request only if what it spent plus the worst case of its requests in flight
(prompt estimate + max_tokens) fits in what it was granted, and it asks for more by appending a
grant that fits, with the entries before it, within llm.budget_usd. As the log is read in full
before each append, the grants of all processes never sum past the budget, whatever runs at
once. A process returns what it did not use when its call ends; the unused grant of a process
that died is returned on its behalf by the first process that finds the budget short (once:
an exclusive `returned-<id>` marker).
"""

from __future__ import annotations

import json
import os
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .partfiles import PartFile, part_name, part_writer, process_id, read_small


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""
    input_per_mtok: float
    output_per_mtok: float

    def cost(self, prompt_tokens: int, completion_tokens: int, discount: float = 1.0) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) * discount / 1e6


class BudgetExceeded(RuntimeError):
    pass


GRANT_FRACTION = 1 / 8   # a grant takes at most this share of what is left (more for a request that needs it)


class Ledger:
    def __init__(self, directory: str | os.PathLike, budget_usd: float | None = None, refresh_s: float = 0.5,
                 alive=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.budget_usd = budget_usd
        self.refresh_s = refresh_s
        self.alive = alive              # holder id -> still running (for returning a dead process's grant)
        self.id = process_id()
        self.reserved = 0.0
        self._others = 0.0            # spend read from other processes' part files
        self._mine = 0.0              # spend booked by this process
        self._by_holder: dict[str, float] = {}
        self.identities: dict[str, set[tuple[str, str | None]]] = {}   # model -> (served model, fingerprint)
        self._offsets: dict[Path, int] = {}
        self._read_at = -1e9
        self._own = self.dir / part_name(self.id, uuid.uuid4().hex[:6])
        self._part = PartFile(self._own)
        # allowance log
        self._log = self.dir / "allowance"
        self._next = 0                # first entry not read yet
        self._granted_total = 0.0     # sum of all entries read
        self._granted_by: dict[str, float] = {}
        self._granted = 0.0           # net grant of this ledger object (its spend is _mine)

    # ------------------------------------------------------------------ spend
    def spent(self, force: bool = False) -> float:
        now = time.monotonic()
        if force or now - self._read_at >= self.refresh_s:
            self._read_at = now
            for part in self.dir.glob("part-*.jsonl"):
                if part == self._own:
                    continue
                with open(part, "rb") as f:
                    f.seek(self._offsets.get(part, 0))
                    data = f.read()
                end = data.rfind(b"\n") + 1   # a torn tail line is read once it is complete
                holder = part_writer(part.name, tagged=True)
                for line in data[:end].splitlines():
                    try:
                        entry = json.loads(line)
                        cost = entry["cost_usd"]
                    except (json.JSONDecodeError, KeyError):
                        continue
                    self._others += cost
                    self._by_holder[holder] = self._by_holder.get(holder, 0.0) + cost
                    self._note(entry)
                self._offsets[part] = self._offsets.get(part, 0) + end
        return self._others + self._mine

    def _note(self, entry: dict) -> None:
        """Who answered: identities[endpoint:model] = {(served model, system_fingerprint)}."""
        if "served_model" in entry:
            self.identities.setdefault(f"{entry.get('endpoint', '')}:{entry.get('model', '')}", set()).add(
                (entry["served_model"], entry.get("system_fingerprint")))

    def record(self, stage: str, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float,
               endpoint: str | None = None, served_model: str | None = None,
               system_fingerprint: str | None = None) -> None:
        entry = {"stage": stage, "model": model, "prompt_tokens": prompt_tokens,
                 "completion_tokens": completion_tokens, "cost_usd": cost_usd, "t": time.time()}
        if served_model is not None:
            entry.update(endpoint=endpoint, served_model=served_model, system_fingerprint=system_fingerprint)
        self._part.append((json.dumps(entry) + "\n").encode())
        self._mine += cost_usd
        self._note(entry)

    # ------------------------------------------------------------------ budget
    def _read_log(self) -> None:
        while (data := read_small(self._log / str(self._next))) is not None:
            entry = json.loads(data)
            self._granted_total += entry["usd"]
            self._granted_by[entry["holder"]] = self._granted_by.get(entry["holder"], 0.0) + entry["usd"]
            self._next += 1

    def _append(self, holder: str, usd: float, why: str) -> bool:
        """Append one entry at the end of the log if `usd` still fits; False when it does not."""
        self._log.mkdir(exist_ok=True)
        tmp = self._log / f".tmp-{self.id}-{uuid.uuid4().hex[:8]}"
        while True:
            self._read_log()
            if usd > 0 and self._granted_total + usd > self.budget_usd + 1e-12:
                return False
            tmp.write_text(json.dumps({"holder": holder, "usd": usd, "why": why, "t": time.time()}))
            try:
                os.link(tmp, self._log / str(self._next))
            except FileExistsError:
                continue              # another process wrote entry n first: read it, try n + 1
            finally:
                tmp.unlink(missing_ok=True)
            self._read_log()
            return True

    def _return_dead(self) -> None:
        """Return the unused grants of processes that died holding them (each once)."""
        if self.alive is None:
            return
        self.spent(force=True)
        for holder, net in list(self._granted_by.items()):
            if holder == self.id or net <= 1e-12 or self.alive(holder):
                continue
            unused = net - self._by_holder.get(holder, 0.0)
            marker = self._log / f"returned-{holder}"
            if unused <= 1e-12 or marker.exists():
                continue
            try:
                os.close(os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
            except FileExistsError:
                continue
            self._append(holder, -unused, "returned on behalf of a process that died")

    def reserve(self, worst_case_usd: float, what: str) -> None:
        """Hold `worst_case_usd` for a request about to be sent, or raise BudgetExceeded."""
        if self.budget_usd is None:
            return
        while (need := self._mine + self.reserved + worst_case_usd - self._granted) > 1e-12:
            self._read_log()
            left = self.budget_usd - self._granted_total
            if left < need:
                self._return_dead()
                left = self.budget_usd - self._granted_total
            if left < need:
                spent = self.spent(force=True)
                others_held = max(0.0, self._granted_total - self._granted - (spent - self._mine))
                raise BudgetExceeded(
                    f"llm.budget_usd = ${self.budget_usd:.4f} would be exceeded: ${spent:.4f} spent (ledger "
                    f"{self.dir}), ${self.reserved:.4f} reserved by this job's requests in flight and "
                    f"${others_held:.4f} held by other jobs running now, and the next {what} request may cost up "
                    f"to ${worst_case_usd:.4f}. Stopped before sending it; answers received so far are cached. "
                    "Raise llm.budget_usd (or point llm.ledger_dir at a fresh ledger) to continue.")
            grant = min(max(need, left * GRANT_FRACTION), left)
            if self._append(self.id, grant, "grant"):
                self._granted += grant
        self.reserved += worst_case_usd

    def release(self, worst_case_usd: float) -> None:
        if self.budget_usd is not None:
            self.reserved -= worst_case_usd

    def close(self) -> None:
        """Return the grant this process did not use (requests in flight are answered by now)."""
        if self.budget_usd is None:
            return
        unused = self._granted - self._mine - self.reserved
        if unused > 1e-12 and self._append(self.id, -unused, "unused"):
            self._granted -= unused
