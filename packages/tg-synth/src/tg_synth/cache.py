"""The step cache: one SQLite row per finished step, keyed by (step, input hash, prompt, backend).

A row is written in one transaction when a step finishes (done or quarantined), so a process killed
at any moment leaves either the whole row or none; a restarted run reads the rows back and repeats
no call that finished. WAL journaling keeps each commit cheap; a lock file keeps two runs from
writing the same cache at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DONE = "done"
QUARANTINED = "quarantined"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
    key TEXT PRIMARY KEY,
    step TEXT NOT NULL,
    input_hash TEXT NOT NULL,
    prompt TEXT NOT NULL,
    backend TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'quarantined')),
    value TEXT,
    reason TEXT,
    raw TEXT,
    calls INTEGER NOT NULL DEFAULT 0,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    cost REAL NOT NULL DEFAULT 0,
    seconds REAL NOT NULL DEFAULT 0,
    created REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS image_hashes (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL
);
"""


class CacheBusyError(RuntimeError):
    """Another run holds the cache."""


def stable_hash(value: Any) -> str:
    """SHA-256 of a JSON value in canonical form (sorted keys, no spaces)."""
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def step_key(step: str, input_hash: str, prompt: str, backend: str) -> str:
    return stable_hash({"step": step, "input": input_hash, "prompt": prompt, "backend": backend})


@dataclass
class Row:
    key: str
    step: str
    status: str
    value: Any = None
    reason: str = ""
    raw: str = ""
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    seconds: float = 0.0

    @property
    def done(self) -> bool:
        return self.status == DONE


class StepCache:
    """Finished step results. ``get`` / ``put`` are cheap enough to call from the event loop."""

    def __init__(self, path: str | Path, lock: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_file = None
        if lock:
            self._lock_file = open(str(self.path) + ".lock", "w")  # noqa: SIM115 - held for the cache's life
            try:
                fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self._lock_file.close()
                raise CacheBusyError(
                    f"{self.path}: another tg-synth run is using this cache; wait for it to finish "
                    "or give this run its own [output] cache"
                ) from None
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.executescript(_SCHEMA)

    def close(self) -> None:
        self.db.close()
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def __enter__(self) -> StepCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # results ------------------------------------------------------------------------------------
    def get(self, key: str) -> Row | None:
        cur = self.db.execute(
            "SELECT key, step, status, value, reason, raw, calls, prompt_tokens, completion_tokens, cost, seconds "
            "FROM results WHERE key = ?",
            (key,),
        )
        r = cur.fetchone()
        if r is None:
            return None
        return Row(r[0], r[1], r[2], json.loads(r[3]) if r[3] is not None else None, r[4] or "", r[5] or "", *r[6:])

    def put(self, row: Row, input_hash: str, prompt: str, backend: str) -> None:
        """Insert one finished result; an existing row (same key) is replaced in the same transaction."""
        self.db.execute(
            "INSERT OR REPLACE INTO results (key, step, input_hash, prompt, backend, status, value, reason, raw, "
            "calls, prompt_tokens, completion_tokens, cost, seconds, created) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                row.key, row.step, input_hash, prompt, backend, row.status,
                json.dumps(row.value, sort_keys=True) if row.value is not None else None,
                row.reason, row.raw[:4000], row.calls, row.prompt_tokens, row.completion_tokens,
                row.cost, row.seconds, time.time(),
            ),
        )

    def delete_quarantined(self) -> int:
        """Forget quarantined rows so that the next run tries them again."""
        return self.db.execute("DELETE FROM results WHERE status = 'quarantined'").rowcount

    def keys(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT key FROM results")}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per step: rows by status, calls, tokens, cost (over the whole cache)."""
        out: dict[str, dict[str, Any]] = {}
        cur = self.db.execute(
            "SELECT step, status, COUNT(*), SUM(calls), SUM(prompt_tokens), SUM(completion_tokens), SUM(cost) "
            "FROM results GROUP BY step, status ORDER BY step"
        )
        for step, status, n, calls, pt, ct, cost in cur:
            s = out.setdefault(step, {"done": 0, "quarantined": 0, "calls": 0, "prompt_tokens": 0,
                                      "completion_tokens": 0, "cost": 0.0})
            s[status] += n
            s["calls"] += calls or 0
            s["prompt_tokens"] += pt or 0
            s["completion_tokens"] += ct or 0
            s["cost"] += cost or 0.0
        return out

    # image hashes -------------------------------------------------------------------------------
    def image_hash(self, path: str, size: int, mtime_ns: int) -> str | None:
        r = self.db.execute(
            "SELECT sha256 FROM image_hashes WHERE path = ? AND size = ? AND mtime_ns = ?", (path, size, mtime_ns)
        ).fetchone()
        return r[0] if r else None

    def put_image_hash(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        self.db.execute(
            "INSERT OR REPLACE INTO image_hashes (path, size, mtime_ns, sha256) VALUES (?, ?, ?, ?)",
            (path, size, mtime_ns, sha256),
        )


def open_readonly(path: str | Path) -> sqlite3.Connection:
    """A read-only view of a cache another process may be writing (for status and tests)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path}: no cache here")
    return sqlite3.connect(f"file:{path}?mode=ro", uri=True)
