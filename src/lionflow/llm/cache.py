"""A persistent, crash-safe cache of LLM responses, so that no request is ever paid for twice.

Layout: a directory of append-only JSONL "part" files, one per writing process. A process
appends one complete line per answer the moment it arrives (a single O_APPEND write), so a
kill -9 loses at most the requests in flight, and concurrent Snakemake jobs never write to the
same file (no locks needed, which shared filesystems such as NFS handle badly). A torn last line
of a killed writer is ignored on reading.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import uuid
from pathlib import Path


def request_key(base_url: str, model: str, messages: list[dict], params: dict) -> str:
    """Identity of a request: where it goes, the model, the messages and every sampling parameter."""
    canonical = json.dumps(
        {"base_url": base_url.rstrip("/"), "model": model, "messages": messages, "params": params},
        sort_keys=True, ensure_ascii=False, separators=(",", ":"),
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, directory: str | os.PathLike):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._entries: dict[str, dict] | None = None
        self._fd: int | None = None

    def _load(self) -> dict[str, dict]:
        if self._entries is None:
            self._entries = {}
            for part in sorted(self.dir.glob("part-*.jsonl")):
                with open(part, encoding="utf-8") as f:
                    for line in f:
                        if not line.endswith("\n"):
                            break  # torn tail of a writer that was killed mid-line
                        try:
                            entry = json.loads(line)
                        except json.JSONDecodeError:
                            continue
                        self._entries[entry["key"]] = entry
        return self._entries

    def __len__(self) -> int:
        return len(self._load())

    def get(self, key: str) -> dict | None:
        return self._load().get(key)

    def put(self, key: str, entry: dict) -> None:
        entry = {"key": key, **entry, "created": time.time()}
        if self._fd is None:
            name = f"part-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
            self._fd = os.open(self.dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.write(self._fd, (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8"))
        self._load()[key] = entry

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
