"""Loss is evidence: what a writer failed to record or export is counted, kept, and stored.

:class:`LossCounter` counts in memory (recording failures, dropped points, export failures) between
exports. While the store refuses writes, the exporter keeps the counts and its last watermark in a
small sidecar file beside the store (``telemetry.db.loss/<writer>.json``), so that readers see the
writer and its loss even then, and a later writer can store what a dead one left
(:func:`recover_writers`). A writer of this host whose process is gone no longer holds reads
back even before that: readers see its last interval as ``writer_lost`` (:func:`writer_alive`).
"""

from __future__ import annotations

import json
import os
import socket
import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from nerops.telemetry.source import Loss, Watermark

if TYPE_CHECKING:
    from nerops.telemetry.store import TelemetryStore

HOST = socket.gethostname()


class LossCounter:
    """Thread-safe counts of ``(kind, signal)``; :meth:`drain` hands them over and starts again."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self.total: dict[str, float] = {}  # since start, for logs and tests

    def add(self, kind: str, count: float = 1, signal: str = "") -> None:
        with self._lock:
            self._counts[(kind, signal)] = self._counts.get((kind, signal), 0) + count
            self.total[kind] = self.total.get(kind, 0) + count

    def drain(self, start: float, end: float, *, writer: str, endpoint: str) -> list[Loss]:
        with self._lock:
            counts, self._counts = self._counts, {}
        return [Loss(kind, n, start, end, signal, writer, endpoint) for (kind, signal), n in sorted(counts.items())]


def sidecar_dir(store_path: Path) -> Path:
    return store_path.with_name(store_path.name + ".loss")


def _sidecar(store_path: Path, writer: str) -> Path:
    return sidecar_dir(store_path) / (writer.replace("/", "_").replace(":", "_") + ".json")


def write_sidecar(store_path: Path, mark: Watermark, pending: list[Loss]) -> None:
    """Replace the writer's sidecar atomically (small: a watermark and a few loss records)."""
    path = _sidecar(store_path, mark.writer)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"watermark": mark.__dict__, "loss": [loss.__dict__ for loss in pending]}
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)


def remove_sidecar(store_path: Path, writer: str) -> None:
    _sidecar(store_path, writer).unlink(missing_ok=True)


def read_sidecars(store_path: Path) -> list[tuple[Watermark, list[Loss]]]:
    """Every writer's sidecar: its last watermark and the loss not yet stored (unreadable ones skipped)."""
    folder = sidecar_dir(store_path)
    found = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            found.append((Watermark(**data["watermark"]), [Loss(**loss) for loss in data["loss"]]))
        except (OSError, ValueError, TypeError, KeyError):
            continue  # being replaced, or not ours
    return found


def writer_alive(mark: Watermark) -> bool:
    """False only for a writer of this host whose process is gone (others: not ours to judge)."""
    if mark.pid is None or mark.host != HOST:
        return True
    try:
        os.kill(mark.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_writers(store: TelemetryStore, endpoint: str, now: float) -> int:
    """Close the writers of ``endpoint`` on this host whose process is gone; store their loss.

    A writer that died without closing may have lost what it recorded after its watermark: that
    span is stored as ``writer_lost`` loss, and the writer closed so it no longer holds reads back.
    Returns how many writers were recovered.
    """
    rows = store._read(
        "SELECT writer, endpoint, exported_to, started, pid, host, interval_s FROM watermarks "
        "WHERE endpoint = ? AND closed = 0 AND host = ?",
        (endpoint, HOST),
    )
    dead = {row[0]: Watermark(row[0], row[1], row[2], row[3], False, row[4], row[5], row[6]) for row in rows}
    sidecars = {mark.writer: (mark, pending) for mark, pending in read_sidecars(store.path)}
    for writer, (mark, _) in sidecars.items():
        if mark.endpoint == endpoint and mark.host == HOST and writer not in dead:
            dead[writer] = mark
    dead = {writer: mark for writer, mark in dead.items() if not writer_alive(mark)}
    for writer, mark in dead.items():
        pending = sidecars.get(writer, (mark, []))[1]
        # it died at most one export interval after it was last heard of (unknown interval: until now)
        seen = max([mark.exported_to, *(loss.end for loss in pending)])
        lost = Loss("writer_lost", 1, mark.exported_to, seen + mark.interval_s if mark.interval_s else now, "",
                    writer, endpoint)  # fmt: skip
        closed = replace(mark, closed=True)
        store.write([], watermark=closed, loss=[*pending, lost])
        remove_sidecar(store.path, writer)
    return len(dead)
