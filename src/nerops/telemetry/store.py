"""The local telemetry store: one SQLite file, pre-aggregated points; system metrics, model signals and the
controller's own metrics apart.

Layout (as Azure Monitor's ``AppMetrics`` keeps metrics: one row per export interval and attribute set)::

    system_points / model_points       (same columns; a metric lives in the table of its kind)
      time           REAL     end of the export interval, epoch seconds
      interval_s     REAL     length of that interval (0 when unknown)
      metric         TEXT     instrument name (nerops.telemetry.metrics)
      endpoint, deployment, model_version   TEXT  ("" when unknown)
      traffic_class  TEXT     live | mirror | probe | smoke (nerops.telemetry.metrics.TRAFFIC_CLASSES)
      label          TEXT     entity label for entities_per_label, else ""
      item_count     measurements in the interval (counters: the value)
      sum, min, max  of the measurements (counters: sum = value, min/max NULL)
      buckets        TEXT     histograms only: sparse JSON {"upper bound": count}
    controller_points  the rollout controller's gauges, one row per rollout, step and metric: the same
                       time, interval_s (the rollout's look interval), metric, endpoint, deployment,
                       model_version, and rollout, phase, value (nerops.telemetry.rollout_points)
    indexes: (metric, time) and (deployment, metric, time): a query reads the window it asks for,
             whatever the length of the history
    metrics_catalog (kind, metric): which metrics each table holds (retention and deployments() use it)
    watermarks      (writer, endpoint, started, exported_to, closed, pid, host): per exporting process,
                    everything it recorded up to exported_to is stored
    telemetry_loss  (writer, endpoint, kind, signal, count, start, end): what a writer could not store

Loss is evidence: an export writes its points, its watermark and the loss it counted in one
transaction. Rows older than their writer's watermark are refused and counted (``late_points``, over
the interval being exported), so data below a watermark never changes once read: a verdict recorded
on it stays true. Reads through the metrics-source port (:mod:`nerops.telemetry.local_source`) stop
at the lowest watermark and report the loss of every interval.

Concurrency: WAL journal, ``busy_timeout``, every write in one ``BEGIN IMMEDIATE`` transaction. One or
more writers (endpoint processes) and any number of readers in other processes (CLI, dashboard, alert
evaluation) work at the same time; readers never block the writer nor see half an export.

Time windows are half-open ``(start, end]``: a row stamped ``t`` summarises ``(t - interval, t]``.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time as _time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from nerops.telemetry.metrics import CONTROLLER, TABLES, kind_of, table_of
from nerops.telemetry.points import Point
from nerops.telemetry.rollout_points import LastLooks, RolloutPoint, last_looks_sql, looks_from_rows
from nerops.telemetry.schema import TelemetryStoreError, check_schema, create_schema
from nerops.telemetry.source import Arm, Loss, Series, Watermark
from nerops.telemetry.sql import INSERT
from nerops.telemetry.store_reads import SeriesPoint, StoreReads

__all__ = ["SeriesPoint", "TelemetryStore", "TelemetryStoreError"]

DEFAULT_RETENTION_DAYS = 14.0
RETENTION_EVERY_S = 60.0


class TelemetryStore(StoreReads):
    """The SQLite telemetry store (see the module docstring). Thread-safe; reopens itself after a fork."""

    def __init__(
        self,
        path: Path | str,
        *,
        retention_days: float | None = DEFAULT_RETENTION_DAYS,
        readonly: bool = False,
        busy_timeout_s: float = 10.0,
    ) -> None:
        self.path = Path(path)
        self.retention_days = retention_days
        self.readonly = readonly
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.RLock()
        self._conn: sqlite3.Connection | None = None
        self._pid = 0
        self._last_retention = 0.0
        self._connection()  # fail now, with a clear message, rather than at the first query

    # -- connection

    def _connection(self) -> sqlite3.Connection:
        if self._conn is not None and self._pid == os.getpid():
            return self._conn
        # never reuse a connection inherited through fork(): open a fresh one in this process
        self._conn, self._pid = self._open(), os.getpid()
        return self._conn

    def _open(self) -> sqlite3.Connection:
        try:
            if self.readonly:
                if not self.path.is_file():
                    raise TelemetryStoreError(f"no telemetry store at {self.path}")
                conn = sqlite3.connect(
                    f"{self.path.resolve().as_uri()}?mode=ro",
                    uri=True,
                    timeout=self.busy_timeout_s,
                    isolation_level=None,
                    check_same_thread=False,
                )
            else:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(
                    self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
                )
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
            if not self.readonly:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                create_schema(conn)
            check_schema(conn, self.path)
            return conn
        except sqlite3.Error as exc:
            raise TelemetryStoreError(f"cannot open the telemetry store {self.path}: {exc}") from exc

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __enter__(self) -> TelemetryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read(self, sql: str, params: Sequence[object]) -> list[tuple]:
        with self._lock:
            try:
                return self._connection().execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise TelemetryStoreError(f"telemetry store {self.path}: {exc}") from exc

    # -- writing

    def write(
        self, points: Iterable[Point | RolloutPoint], *, watermark: Watermark | None = None, loss: Iterable[Loss] = ()
    ) -> int:
        """Insert points, and a writer's watermark and loss, in one transaction; returns the points written.

        Each point goes to the table of its metric's kind (a :class:`RolloutPoint` for the controller's).

        With a ``watermark``, points not newer than that writer's stored watermark are late: refused,
        and counted as ``late_points`` loss over ``(stored watermark, new watermark]``.
        """
        points, loss = list(points), list(loss)
        if self.readonly:
            raise TelemetryStoreError(f"{self.path} is open read-only")
        with self._transaction(f"cannot write to the telemetry store {self.path}") as conn:
            if watermark is not None:
                points, late = _split_late(conn, points, watermark)
                loss += late
                _upsert_watermark(conn, watermark)
            written = self._insert(conn, points)
            conn.executemany(
                "INSERT INTO telemetry_loss VALUES (?, ?, ?, ?, ?, ?, ?)",
                [(x.writer, x.endpoint, x.kind, x.signal, x.count, x.start, x.end) for x in loss],
            )
        return written

    @contextlib.contextmanager
    def _transaction(self, failure: str) -> Iterator[sqlite3.Connection]:
        """One ``BEGIN IMMEDIATE`` transaction under the lock: committed, or rolled back on any error; SQLite's
        errors become ``TelemetryStoreError(failure: ...)``."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TelemetryStoreError(f"{failure}: {exc}") from exc

    def _insert(self, conn: sqlite3.Connection, points: Sequence[Point | RolloutPoint]) -> int:
        by_table: dict[str, list[tuple[object, ...]]] = {table: [] for table in TABLES.values()}
        catalog: set[tuple[str, str]] = set()
        for point in points:
            kind = kind_of(point.metric)
            if (kind == CONTROLLER) != isinstance(point, RolloutPoint):
                wanted = "RolloutPoint" if kind == CONTROLLER else "Point"
                raise ValueError(f"{point.metric!r} is a {kind} metric: write it as a {wanted}")
            by_table[TABLES[kind]].append(point.row())
            catalog.add((kind, point.metric))
        for table, table_rows in by_table.items():
            if table_rows:
                conn.executemany(INSERT[table], table_rows)
        conn.executemany("INSERT OR IGNORE INTO metrics_catalog VALUES (?, ?)", sorted(catalog))
        return len(points)

    def write_rows(self, rows: Mapping[str, Sequence[tuple[object, ...]]], catalog: Iterable[tuple[str, str]]) -> int:
        """Low-level bulk insert of already-built rows (``Point.row()`` order) per table: for benchmarks."""
        if self.readonly:
            raise TelemetryStoreError(f"{self.path} is open read-only")
        written = 0
        with self._transaction(f"cannot write to the telemetry store {self.path}") as conn:
            for table, table_rows in rows.items():
                if table_rows:
                    conn.executemany(INSERT[table_of(table)], table_rows)
                    written += len(table_rows)
            conn.executemany("INSERT OR IGNORE INTO metrics_catalog VALUES (?, ?)", sorted(set(catalog)))
        return written

    # -- the metrics-source port (nerops.telemetry.source.MetricsSource)

    def series(
        self,
        endpoint: str | None,
        arms: Sequence[Arm] | None,
        metrics: Sequence[str],
        start: float,
        end: float,
        step: float,
        traffic_class: str | Sequence[str] = "live",
        *,
        buckets: bool = True,
        squares: bool = True,
    ) -> Series:
        """Per interval and arm, with watermark and loss: see :func:`nerops.telemetry.local_source.read_series`."""
        from nerops.telemetry.local_source import read_series

        detail = {"buckets": buckets, "squares": squares}
        return read_series(self, endpoint, arms, metrics, start, end, step, traffic_class, **detail)

    def watermark(self, endpoint: str | None) -> float | None:
        """The lowest open watermark of ``endpoint``'s writers (inf: all closed; None: no writer ever)."""
        from nerops.telemetry.local_source import lowest_watermark

        return lowest_watermark(self, endpoint)

    # -- the controller's own telemetry (nerops.telemetry.rollout_points)

    def last_looks(self, endpoint: str | None, start: float, end: float) -> LastLooks:
        """Each rollout's latest last-look point in ``(start, end]`` (of ``endpoint``, or of every endpoint)."""
        query = last_looks_sql(start, end, endpoint=endpoint)
        return LastLooks(looks_from_rows(self._read(query.sql, query.params)), str(query))

    def apply_retention(self, now: float | None = None) -> int:
        """Delete rows older than ``retention_days`` before ``now``; returns how many were deleted."""
        if self.retention_days is None or self.readonly:
            return 0
        cutoff = (_time.time() if now is None else now) - self.retention_days * 86400.0
        deleted = 0
        with self._transaction(f"retention on the telemetry store {self.path} failed") as conn:
            for kind, metric in conn.execute("SELECT kind, metric FROM metrics_catalog").fetchall():
                cursor = conn.execute(f"DELETE FROM {TABLES[kind]} WHERE metric = ? AND time < ?", (metric, cutoff))
                deleted += cursor.rowcount
        self._last_retention = _time.monotonic()
        return deleted

    def maybe_apply_retention(self, now: float | None = None, *, every_s: float = RETENTION_EVERY_S) -> int:
        """:meth:`apply_retention` at most once per ``every_s`` seconds (the exporter calls this on export)."""
        if self._last_retention and _time.monotonic() - self._last_retention < every_s:
            return 0
        return self.apply_retention(now)


def _split_late(conn: sqlite3.Connection, points: list[Point], mark: Watermark) -> tuple[list[Point], list[Loss]]:
    row = conn.execute("SELECT exported_to FROM watermarks WHERE writer = ?", (mark.writer,)).fetchone()
    if row is None:
        return points, []
    kept = [point for point in points if point.time > row[0]]
    late = len(points) - len(kept)
    if not late:
        return points, []
    end = max(mark.exported_to, row[0])
    return kept, [Loss("late_points", late, row[0], end, "", mark.writer, mark.endpoint)]


def _upsert_watermark(conn: sqlite3.Connection, mark: Watermark) -> None:
    conn.execute(
        "INSERT INTO watermarks VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (writer) DO UPDATE SET "
        "exported_to = MAX(exported_to, excluded.exported_to), closed = MAX(closed, excluded.closed)",
        (
            mark.writer,
            mark.endpoint,
            mark.started,
            mark.exported_to,
            int(mark.closed),
            mark.pid,
            mark.host,
            mark.interval_s,
        ),  # fmt: skip
    )
