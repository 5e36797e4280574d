"""Estimated spending: a price table, and a budget shared by every process writing one ledger.

The ledger is a directory of append-only JSONL part files, one per writing process (the same
crash-safe, lock-free layout as the response cache, so it works on NFS/Lustre): one line per
paid request with its tokens and cost. The spend of all processes is re-read at most every
`refresh_s`; a request is sent only if spent + reserved-in-flight + its worst case (prompt
estimate + max_tokens) stays within the budget, so the budget is not exceeded even with
many requests in flight (to the accuracy of the prompt-token estimate).
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Price:
    """USD per million tokens."""
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0

    def cost(self, prompt_tokens: int, completion_tokens: int, discount: float = 1.0) -> float:
        return (prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok) * discount / 1e6


class BudgetExceeded(RuntimeError):
    pass


class Ledger:
    def __init__(self, directory: str | os.PathLike, budget_usd: float | None = None, refresh_s: float = 0.5):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.budget_usd = budget_usd
        self.refresh_s = refresh_s
        self.reserved = 0.0
        self._others = 0.0            # spend read from other processes' part files
        self._mine = 0.0              # spend booked by this process
        self._offsets: dict[Path, int] = {}
        self._read_at = -1e9
        self._fd: int | None = None
        self._own: Path | None = None

    def spent(self) -> float:
        now = time.monotonic()
        if now - self._read_at >= self.refresh_s:
            self._read_at = now
            for part in self.dir.glob("part-*.jsonl"):
                if part == self._own:
                    continue
                with open(part, "rb") as f:
                    f.seek(self._offsets.get(part, 0))
                    data = f.read()
                end = data.rfind(b"\n") + 1   # a torn tail line is read once it is complete
                for line in data[:end].splitlines():
                    try:
                        self._others += json.loads(line)["cost_usd"]
                    except (json.JSONDecodeError, KeyError):
                        continue
                self._offsets[part] = self._offsets.get(part, 0) + end
        return self._others + self._mine

    def reserve(self, worst_case_usd: float, what: str) -> None:
        """Hold `worst_case_usd` for a request about to be sent, or raise BudgetExceeded."""
        if self.budget_usd is None:
            return
        spent = self.spent()
        if spent + self.reserved + worst_case_usd > self.budget_usd:
            raise BudgetExceeded(
                f"llm.budget_usd = ${self.budget_usd:.4f} would be exceeded: ${spent:.4f} spent (ledger {self.dir}), "
                f"${self.reserved:.4f} reserved by requests in flight, and the next {what} request may cost up to "
                f"${worst_case_usd:.4f}. Stopped before sending it; answers received so far are cached. "
                "Raise llm.budget_usd (or point llm.ledger_dir at a fresh ledger) to continue.")
        self.reserved += worst_case_usd

    def release(self, worst_case_usd: float) -> None:
        if self.budget_usd is not None:
            self.reserved -= worst_case_usd

    def record(self, stage: str, model: str, prompt_tokens: int, completion_tokens: int, cost_usd: float) -> None:
        if self._fd is None:
            if self._own is None:
                self._own = self.dir / f"part-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._fd = os.open(self._own, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        line = json.dumps({"stage": stage, "model": model, "prompt_tokens": prompt_tokens,
                           "completion_tokens": completion_tokens, "cost_usd": cost_usd, "t": time.time()})
        os.write(self._fd, (line + "\n").encode())
        self._mine += cost_usd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
