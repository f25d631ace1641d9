"""The local telemetry store: one SQLite file, pre-aggregated points, system metrics and model signals apart.

Layout (as Azure Monitor's ``AppMetrics`` keeps metrics: one row per export interval and attribute set)::

    system_points / model_points       (same columns; a metric lives in the table of its kind)
      time           REAL     end of the export interval, epoch seconds
      interval_s     REAL     length of that interval (0 when unknown)
      metric         TEXT     instrument name (nerops.telemetry.metrics)
      endpoint, deployment, model_version   TEXT  ("" when unknown)
      mirrored       INTEGER  1 for shadow copies (response discarded), else 0
      label          TEXT     entity label for entities_per_label, else ""
      item_count     measurements in the interval (counters: the value)
      sum, min, max  of the measurements (counters: sum = value, min/max NULL)
      buckets        TEXT     histograms only: sparse JSON {"upper bound": count}
    indexes: (metric, time) and (deployment, metric, time): a query reads the window it asks for,
             whatever the length of the history
    metrics_catalog (kind, metric): which metrics each table holds (retention and deployments() use it)

Concurrency: WAL journal, ``busy_timeout``, every write in one ``BEGIN IMMEDIATE`` transaction. One or
more writers (endpoint processes) and any number of readers in other processes (CLI, dashboard, alert
evaluation) work at the same time; readers never block the writer nor see half an export.

Time windows are half-open ``(start, end]``: a row stamped ``t`` summarises ``(t - interval, t]``.
"""

from __future__ import annotations

import bisect
import json
import math
import os
import sqlite3
import threading
import time as _time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import NamedTuple

from nerops.errors import NeropsError
from nerops.telemetry.metrics import KINDS, TABLES, kind_of, metric_spec, table_of

SCHEMA_VERSION = 1
DEFAULT_RETENTION_DAYS = 14.0
RETENTION_EVERY_S = 60.0
GROUP_COLUMNS = ("deployment", "model_version", "endpoint", "label", "mirrored")

_COLUMNS = (
    "time",
    "interval_s",
    "metric",
    "endpoint",
    "deployment",
    "model_version",
    "mirrored",
    "label",
    "item_count",
    "sum",
    "min",
    "max",
    "buckets",
)
_INSERT = {
    table: f"INSERT INTO {table} ({', '.join(_COLUMNS)}) VALUES ({', '.join('?' * len(_COLUMNS))})"
    for table in TABLES.values()
}


class TelemetryStoreError(NeropsError):
    """The telemetry store cannot be opened, read or written."""


# --------------------------------------------------------------------------------------------- points


def sparse_buckets(bounds: Sequence[float], counts: Sequence[int]) -> tuple[tuple[float, int], ...]:
    """OTel explicit buckets -> ``((upper bound, count), ...)`` keeping only what a quantile needs.

    ``counts[i]`` counts values in ``(bounds[i-1], bounds[i]]`` (the last one up to +inf). Non-empty
    buckets are kept, each with its predecessor's upper bound (count 0 if empty) so the lower edge of
    every kept bucket stays known after rows are merged.
    """
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(bounds)} bounds (expected {len(bounds) + 1})")
    kept: dict[float, int] = {}
    for i, count in enumerate(counts):
        if count:
            kept[float(bounds[i]) if i < len(bounds) else math.inf] = int(count)
            if i > 0:
                kept.setdefault(float(bounds[i - 1]), int(counts[i - 1]))
    return tuple(sorted(kept.items()))


def bucket_counts(values: Iterable[float], bounds: Sequence[float]) -> list[int]:
    """Raw values -> OTel explicit bucket counts (``len(bounds) + 1`` of them)."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    return counts


def _key(bound: float) -> str:
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


def encode_buckets(buckets: Sequence[tuple[float, int]] | None) -> str | None:
    if not buckets:
        return None
    return json.dumps({_key(upper): count for upper, count in buckets}, separators=(",", ":"))


@dataclass(frozen=True)
class Point:
    """One pre-aggregated row: a metric's measurements over one export interval for one attribute set."""

    time: float
    metric: str
    endpoint: str
    deployment: str
    model_version: str
    item_count: float
    sum: float
    min: float | None = None
    max: float | None = None
    mirrored: bool = False
    label: str = ""
    buckets: tuple[tuple[float, int], ...] = ()
    interval_s: float = 0.0

    @classmethod
    def counter(
        cls,
        time: float,
        metric: str,
        value: float,
        *,
        endpoint: str = "",
        deployment: str = "",
        model_version: str = "",
        mirrored: bool = False,
        label: str = "",
        interval_s: float = 0.0,
    ) -> Point:
        """A counter's increase over the interval ending at ``time``."""
        return cls(
            time, metric, endpoint, deployment, model_version, value, value, None, None, mirrored, label, (), interval_s
        )

    @classmethod
    def histogram(
        cls,
        time: float,
        metric: str,
        values: Sequence[float],
        *,
        endpoint: str = "",
        deployment: str = "",
        model_version: str = "",
        mirrored: bool = False,
        label: str = "",
        interval_s: float = 0.0,
        bounds: Sequence[float] | None = None,
    ) -> Point:
        """A histogram row from raw values, bucketed with the metric's own bounds (tests, benchmarks)."""
        bounds = metric_spec(metric).bounds if bounds is None else bounds
        return cls(
            time,
            metric,
            endpoint,
            deployment,
            model_version,
            len(values),
            float(sum(values)),
            float(min(values)) if values else None,
            float(max(values)) if values else None,
            mirrored,
            label,
            sparse_buckets(bounds, bucket_counts(values, bounds)) if values else (),
            interval_s,
        )

    def row(self) -> tuple[object, ...]:
        return (
            float(self.time),
            float(self.interval_s),
            self.metric,
            self.endpoint,
            self.deployment,
            self.model_version,
            1 if self.mirrored else 0,
            self.label,
            self.item_count,
            float(self.sum),
            self.min,
            self.max,
            encode_buckets(self.buckets),
        )


# ----------------------------------------------------------------------------------------- aggregates


def quantile(
    buckets: Sequence[tuple[float, float]], q: float, *, lo: float | None = None, hi: float | None = None
) -> float | None:
    """Approximate quantile ``q`` (0..1) from ``(upper bound, count)`` buckets, interpolating within one.

    ``lo``/``hi`` (the observed min and max) bound the first and the open-ended last bucket. ``None``
    when there is nothing to estimate from.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, not {q}")
    ordered = sorted(buckets)
    total = sum(count for _, count in ordered)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    previous: float | None = None
    for upper, count in ordered:
        if count > 0 and seen + count >= rank:
            lower = previous if previous is not None else (lo if lo is not None else upper)
            top = upper
            if hi is not None:
                top = min(top, hi)
            if lo is not None:
                lower = max(lower, lo)
            if math.isinf(top):
                top = lower
            lower = min(lower, top)
            return lower + (top - lower) * max(0.0, min(1.0, (rank - seen) / count))
        seen += count
        previous = upper
    return ordered[-1][0] if hi is None else hi


@dataclass(frozen=True)
class Aggregate:
    """Merged rows: ``count`` measurements (requests, documents; counters: the total), their sum, min, max.

    ``buckets`` are ``(upper bound, count)`` pairs (histograms, when asked for); ``points`` is the number
    of stored rows merged.
    """

    count: float = 0.0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    buckets: tuple[tuple[float, float], ...] = ()
    points: int = 0

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    def quantile(self, q: float) -> float | None:
        return quantile(self.buckets, q, lo=self.min, hi=self.max)

    @property
    def p95(self) -> float | None:
        return self.quantile(0.95)

    def merge(self, other: Aggregate) -> Aggregate:
        merged: dict[float, float] = dict(self.buckets)
        for upper, count in other.buckets:
            merged[upper] = merged.get(upper, 0) + count
        return Aggregate(
            self.count + other.count,
            self.sum + other.sum,
            _pick(min, self.min, other.min),
            _pick(max, self.max, other.max),
            tuple(sorted(merged.items())),
            self.points + other.points,
        )


EMPTY = Aggregate()


def _pick(choose, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)


class SeriesPoint(NamedTuple):
    """One step of a time series: ``(start, group, aggregate)``; the step covers ``(start, start + step]``."""

    start: float
    group: str
    aggregate: Aggregate


@dataclass
class Query:
    """A query as run: SQL text and parameters; ``str()`` shows it with the parameters in place."""

    sql: str
    params: list[object] = field(default_factory=list)

    def __str__(self) -> str:
        return render_sql(self.sql, self.params)


def render_sql(sql: str, params: Sequence[object]) -> str:
    """The SQL text with every ``?`` replaced by its parameter as a literal (evidence, not for running)."""
    parts = sql.split("?")
    if len(parts) - 1 != len(params):
        return f"{sql}  -- params {list(params)!r}"
    out = [parts[0]]
    for value, rest in zip(params, parts[1:], strict=True):
        if isinstance(value, str):
            out.append("'" + value.replace("'", "''") + "'")
        elif value is None:
            out.append("NULL")
        else:
            out.append(repr(value))
        out.append(rest)
    return " ".join("".join(out).split())


# ------------------------------------------------------------------------------------------------ store


class TelemetryStore:
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
        self._known_metrics: set[tuple[str, str]] = set()
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
                self._create_schema(conn)
            self._check_schema(conn)
            return conn
        except sqlite3.Error as exc:
            raise TelemetryStoreError(f"cannot open the telemetry store {self.path}: {exc}") from exc

    def _create_schema(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            for table in TABLES.values():
                conn.execute(
                    f"""CREATE TABLE IF NOT EXISTS {table} (
                        time REAL NOT NULL, interval_s REAL NOT NULL DEFAULT 0, metric TEXT NOT NULL,
                        endpoint TEXT NOT NULL, deployment TEXT NOT NULL, model_version TEXT NOT NULL,
                        mirrored INTEGER NOT NULL DEFAULT 0, label TEXT NOT NULL DEFAULT '',
                        item_count REAL NOT NULL, sum REAL NOT NULL, min REAL, max REAL, buckets TEXT)"""
                )
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_metric_time ON {table} (metric, time)")
                conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_deployment ON {table} (deployment, metric, time)")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS metrics_catalog (kind TEXT NOT NULL, metric TEXT NOT NULL, "
                "PRIMARY KEY (kind, metric)) WITHOUT ROWID"
            )
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _check_schema(self, conn: sqlite3.Connection) -> None:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise TelemetryStoreError(
                f"{self.path} has store schema {version}, newer than this nerops ({SCHEMA_VERSION}): upgrade nerops"
            )
        if version < SCHEMA_VERSION:
            raise TelemetryStoreError(f"{self.path} is not a telemetry store (or an empty one)")

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

    def write(self, points: Iterable[Point]) -> int:
        """Insert points (each into the table of its metric's kind) in one transaction; returns how many."""
        by_table: dict[str, list[tuple[object, ...]]] = {table: [] for table in TABLES.values()}
        catalog: set[tuple[str, str]] = set()
        for point in points:
            kind = kind_of(point.metric)
            by_table[TABLES[kind]].append(point.row())
            catalog.add((kind, point.metric))
        return self.write_rows(by_table, catalog)

    def write_rows(self, rows: Mapping[str, Sequence[tuple[object, ...]]], catalog: Iterable[tuple[str, str]]) -> int:
        """Low-level bulk insert of already-built rows (``Point.row()`` order) per table: for benchmarks."""
        if self.readonly:
            raise TelemetryStoreError(f"{self.path} is open read-only")
        written = 0
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for table, table_rows in rows.items():
                        if table_rows:
                            conn.executemany(_INSERT[table_of(table)], table_rows)
                            written += len(table_rows)
                    new = set(catalog) - self._known_metrics
                    if new:
                        conn.executemany("INSERT OR IGNORE INTO metrics_catalog VALUES (?, ?)", sorted(new))
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TelemetryStoreError(f"cannot write to the telemetry store {self.path}: {exc}") from exc
            self._known_metrics |= set(catalog)
        return written

    def apply_retention(self, now: float | None = None) -> int:
        """Delete rows older than ``retention_days`` before ``now``; returns how many were deleted."""
        if self.retention_days is None or self.readonly:
            return 0
        cutoff = (_time.time() if now is None else now) - self.retention_days * 86400.0
        deleted = 0
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for kind, metric in conn.execute("SELECT kind, metric FROM metrics_catalog").fetchall():
                        cursor = conn.execute(
                            f"DELETE FROM {TABLES[kind]} WHERE metric = ? AND time < ?", (metric, cutoff)
                        )
                        deleted += cursor.rowcount
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise TelemetryStoreError(f"retention on the telemetry store {self.path} failed: {exc}") from exc
            self._last_retention = _time.monotonic()
        return deleted

    def maybe_apply_retention(self, now: float | None = None, *, every_s: float = RETENTION_EVERY_S) -> int:
        """:meth:`apply_retention` at most once per ``every_s`` seconds (the exporter calls this on export)."""
        if self._last_retention and _time.monotonic() - self._last_retention < every_s:
            return 0
        return self.apply_retention(now)

    # -- reading

    def group_query(
        self,
        kind: str,
        metric: str,
        start: float,
        end: float,
        *,
        by: Sequence[str] = ("deployment",),
        deployments: Sequence[str] | None = None,
        label: str | None = None,
        mirrored: bool | None = False,
        endpoint: str | None = None,
        buckets: bool = False,
    ) -> Query:
        """The SQL :meth:`group` runs (``buckets=True``: the bucket-merging query) for evidence."""
        table = self._table_for(kind, metric)
        for column in by:
            if column not in GROUP_COLUMNS:
                raise ValueError(f"cannot group by {column!r}: choose from {', '.join(GROUP_COLUMNS)}")
        prefix = "p." if buckets else ""
        where = [f"{prefix}metric = ?", f"{prefix}time > ?", f"{prefix}time <= ?"]
        params: list[object] = [metric, float(start), float(end)]
        if deployments is not None:
            where.append(f"{prefix}deployment IN ({', '.join('?' * len(deployments))})")
            params.extend(deployments)
        if label is not None:
            where.append(f"{prefix}label = ?")
            params.append(label)
        if mirrored is not None:
            where.append(f"{prefix}mirrored = ?")
            params.append(1 if mirrored else 0)
        if endpoint is not None:
            where.append(f"{prefix}endpoint = ?")
            params.append(endpoint)
        keys = ", ".join(f"{prefix}{column}" for column in by)
        select_keys = f"{keys}, " if by else ""
        group = f" GROUP BY {keys}" if by else ""
        if buckets:
            where.append("p.buckets IS NOT NULL")
            sql = (
                f"SELECT {select_keys}j.key, SUM(j.value) FROM {table} AS p, json_each(p.buckets) AS j "
                f"WHERE {' AND '.join(where)} GROUP BY {select_keys}j.key"
            )
        else:
            sql = (
                f"SELECT {select_keys}SUM(item_count), SUM(sum), MIN(min), MAX(max), COUNT(*) FROM {table} "
                f"WHERE {' AND '.join(where)}{group}"
            )
        return Query(sql, params)

    def group(
        self,
        kind: str,
        metric: str,
        start: float,
        end: float,
        *,
        by: Sequence[str] = ("deployment",),
        deployments: Sequence[str] | None = None,
        label: str | None = None,
        mirrored: bool | None = False,
        endpoint: str | None = None,
        buckets: bool = False,
    ) -> dict[tuple[str, ...], Aggregate]:
        """One aggregate per group (e.g. per deployment) over ``(start, end]``; groups without rows are absent.

        ``mirrored``: False = live traffic only, True = shadow copies only, None = both.
        ``buckets``: also merge histogram buckets (needed for quantiles; one more query).
        """
        filters = {"by": by, "deployments": deployments, "label": label, "mirrored": mirrored, "endpoint": endpoint}
        if deployments is not None and not deployments:
            return {}
        query = self.group_query(kind, metric, start, end, **filters)
        width = len(by)
        groups: dict[tuple[str, ...], Aggregate] = {}
        for row in self._read(query.sql, query.params):
            count, total, low, high, points = row[width:]
            if not points:
                continue
            groups[_group_key(row[:width])] = Aggregate(count or 0.0, total or 0.0, low, high, (), points)
        if buckets and groups:
            query = self.group_query(kind, metric, start, end, buckets=True, **filters)
            merged: dict[tuple[str, ...], dict[float, float]] = {}
            for row in self._read(query.sql, query.params):
                upper, count = float(row[width]), row[width + 1]
                merged.setdefault(_group_key(row[:width]), {})[upper] = count
            for key, counts in merged.items():
                if key in groups:
                    groups[key] = replace(groups[key], buckets=tuple(sorted(counts.items())))
        return groups

    def aggregate(
        self,
        kind: str,
        metric: str,
        start: float,
        end: float,
        *,
        deployment: str | None = None,
        label: str | None = None,
        mirrored: bool | None = False,
        endpoint: str | None = None,
        buckets: bool = True,
    ) -> Aggregate:
        """Everything of one metric over ``(start, end]`` merged into one :class:`Aggregate`."""
        groups = self.group(
            kind,
            metric,
            start,
            end,
            by=(),
            deployments=None if deployment is None else [deployment],
            label=label,
            mirrored=mirrored,
            endpoint=endpoint,
            buckets=buckets and metric_spec(metric).is_histogram,
        )
        return groups.get((), EMPTY)

    def series(
        self,
        kind: str,
        metric: str,
        start: float,
        end: float,
        step_s: float,
        *,
        by: str | None = "deployment",
        deployment: str | None = None,
        label: str | None = None,
        mirrored: bool | None = False,
        buckets: bool = False,
    ) -> list[SeriesPoint]:
        """Steps of ``step_s`` from ``start``: ``(step start, group, Aggregate)`` for steps with data, in order."""
        if step_s <= 0:
            raise ValueError(f"step_s must be positive, not {step_s}")
        if by is not None and by not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {by!r}: choose from {', '.join(GROUP_COLUMNS)}")
        table = self._table_for(kind, metric)
        # step k covers (start + k*step, start + (k+1)*step]: k = ceil((time - start) / step) - 1
        offset = "((p.time - ?) / ?)"
        step_expr = f"(CAST({offset} AS INTEGER) - ({offset} = CAST({offset} AS INTEGER)))"
        where = ["p.metric = ?", "p.time > ?", "p.time <= ?"]
        params: list[object] = [metric, float(start), float(end)]
        if deployment is not None:
            where.append("p.deployment = ?")
            params.append(deployment)
        if label is not None:
            where.append("p.label = ?")
            params.append(label)
        if mirrored is not None:
            where.append("p.mirrored = ?")
            params.append(1 if mirrored else 0)
        group_col = f"p.{by}" if by else "''"
        step_params = [float(start), float(step_s)] * 3
        rows = self._read(
            f"SELECT {step_expr} AS k, {group_col} AS g, SUM(item_count), SUM(sum), MIN(min), MAX(max), COUNT(*) "
            f"FROM {table} AS p WHERE {' AND '.join(where)} GROUP BY k, g ORDER BY k, g",
            step_params + params,
        )
        bucket_rows: dict[tuple[int, str], dict[float, float]] = {}
        if buckets:
            for k, g, key, count in self._read(
                f"SELECT {step_expr} AS k, {group_col} AS g, j.key, SUM(j.value) FROM {table} AS p, "
                f"json_each(p.buckets) AS j WHERE {' AND '.join(where)} AND p.buckets IS NOT NULL GROUP BY k, g, j.key",
                step_params + params,
            ):
                bucket_rows.setdefault((k, str(g)), {})[float(key)] = count
        return [
            SeriesPoint(
                start + k * step_s,
                str(g),
                Aggregate(count, total, low, high, tuple(sorted(bucket_rows.get((k, str(g)), {}).items())), points),
            )
            for k, g, count, total, low, high, points in rows
        ]

    def deployments(self, start: float, end: float, *, kind: str | None = None) -> list[str]:
        """Deployments with at least one point in ``(start, end]`` (of one kind, or any), sorted."""
        found: set[str] = set()
        catalog = self._read("SELECT kind, metric FROM metrics_catalog", ())
        for table_kind in KINDS if kind is None else (kind if kind in KINDS else _kind_of_table(kind),):
            metrics = [metric for k, metric in catalog if k == table_kind]
            if not metrics:
                continue
            rows = self._read(
                f"SELECT DISTINCT deployment FROM {TABLES[table_kind]} "
                f"WHERE metric IN ({', '.join('?' * len(metrics))}) AND time > ? AND time <= ?",
                [*metrics, float(start), float(end)],
            )
            found.update(row[0] for row in rows)
        return sorted(found)

    def row_count(self, kind: str) -> int:
        return self._read(f"SELECT COUNT(*) FROM {table_of(kind)}", ())[0][0]

    def time_range(self, kind: str | None = None) -> tuple[float, float] | None:
        """(oldest, newest) point time, or None for an empty store (uses the (metric, time) index)."""
        lows, highs = [], []
        for k, metric in self._read("SELECT kind, metric FROM metrics_catalog", ()):
            if kind is not None and k != kind:
                continue
            low, high = self._read(f"SELECT MIN(time), MAX(time) FROM {TABLES[k]} WHERE metric = ?", (metric,))[0]
            if low is not None:
                lows.append(low)
                highs.append(high)
        return (min(lows), max(highs)) if lows else None

    def _table_for(self, kind: str, metric: str) -> str:
        table = table_of(kind)
        spec = metric_spec(metric)
        if TABLES[spec.kind] != table:
            raise ValueError(f"{metric!r} is a {spec.kind} metric: it is stored in {TABLES[spec.kind]}, not {table}")
        return table


def _group_key(values: Sequence[object]) -> tuple[str, ...]:
    return tuple(str(value) for value in values)


def _kind_of_table(table: str) -> str:
    for kind, name in TABLES.items():
        if name == table:
            return kind
    raise ValueError(f"unknown signal kind {table!r}: use 'system' or 'model'")
