"""What the webhook receiver remembers: the deliveries it consumed (SQLite) and what it answered (a rotating log).

``<state>/webhook/deliveries.db`` holds one row per consumed delivery: its id and its body's sha256, so that a
redelivery (GitHub reuses the id) and a replay of a captured body under a new id (the signature covers only
the body) both come back as duplicates, across restarts. A delivery is consumed once nothing is left to do:
at once when it needs no event (ping, ignored push), and only after the Prefect server accepted the event
otherwise. Rows older than the replay window are pruned (on open, then at most once an hour).

``<state>/webhook/deliveries.log`` gets one JSON line per delivery: time, delivery id, event, verdict, status,
code, reason and counts; never payload text or file names.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from logging.handlers import RotatingFileHandler
from pathlib import Path
from typing import Any

PRUNE_EVERY_S = 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS deliveries (
    delivery TEXT PRIMARY KEY,
    body_sha256 TEXT NOT NULL,
    event TEXT NOT NULL,
    verdict TEXT NOT NULL,
    consumed_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS deliveries_body ON deliveries (body_sha256);
CREATE INDEX IF NOT EXISTS deliveries_time ON deliveries (consumed_at);
"""


@dataclass(frozen=True)
class Seen:
    """An earlier consumed delivery that a new one repeats: ``by`` is ``delivery`` (same id) or ``body``."""

    by: str
    delivery: str
    verdict: str
    consumed_at: float


class DeliveryStore:
    """Consumed deliveries, by id and by body hash, in SQLite (one process writes; WAL, short transactions)."""

    def __init__(self, path: Path, max_age_s: float, clock=time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_age_s = max_age_s
        self._clock = clock
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=5.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")  # a consumed delivery survives a power cut
        self._db.executescript(_SCHEMA)
        self._last_prune = 0.0
        self.prune()

    def seen(self, delivery: str, body_sha256: str) -> Seen | None:
        """The consumed delivery with this id, else one with this body; None if neither (expired rows ignored)."""
        horizon = self._clock() - self.max_age_s
        with self._lock:
            row = self._db.execute(
                "SELECT delivery, verdict, consumed_at FROM deliveries WHERE delivery = ? AND consumed_at >= ?",
                (delivery, horizon),
            ).fetchone()
            by = "delivery"
            if row is None:
                by = "body"
                row = self._db.execute(
                    "SELECT delivery, verdict, consumed_at FROM deliveries WHERE body_sha256 = ? AND consumed_at >= ?"
                    " ORDER BY consumed_at LIMIT 1",
                    (body_sha256, horizon),
                ).fetchone()
        return None if row is None else Seen(by, row[0], row[1], row[2])

    def consume(self, delivery: str, body_sha256: str, event: str, verdict: str) -> None:
        """Remember a delivery as done (an expired row of the same id is replaced)."""
        now = self._clock()
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO deliveries (delivery, body_sha256, event, verdict, consumed_at)"
                " VALUES (?, ?, ?, ?, ?)",
                (delivery, body_sha256, event, verdict, now),
            )
        if now - self._last_prune >= PRUNE_EVERY_S:
            self.prune()

    def prune(self) -> int:
        """Forget deliveries older than the replay window; how many."""
        now = self._clock()
        with self._lock:
            cursor = self._db.execute("DELETE FROM deliveries WHERE consumed_at < ?", (now - self.max_age_s,))
            self._last_prune = now
        return cursor.rowcount

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM deliveries").fetchone()[0]

    def healthy(self) -> bool:
        try:
            with self._lock:
                self._db.execute("SELECT 1").fetchone()
        except sqlite3.Error:
            return False
        return True

    def close(self) -> None:
        with self._lock:
            self._db.close()


class DeliveryLog:
    """One JSON line per delivery in a size-bounded, rotating file (``max_bytes`` x (1 + ``backups``) at most)."""

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # backupCount 0 would let the file grow without bound: keep at least one rotated file
        self._handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=max(backups, 1), encoding="utf-8")
        self._handler.setFormatter(logging.Formatter("%(message)s"))

    def write(self, **entry: Any) -> dict:
        line = {"time": datetime.now(UTC).isoformat(timespec="milliseconds"), **entry}
        text = json.dumps(line, separators=(",", ":"))
        self._handler.handle(logging.makeLogRecord({"name": "nerops.webhook.deliveries", "msg": text}))
        return line

    def close(self) -> None:
        self._handler.close()
