"""Reads of the local store, as a mixin of :class:`~nerops.telemetry.store.TelemetryStore`.

Grouped aggregates (per deployment, label, ...), stepped series for the dashboard, which deployments
have data, the time range. The SQL text comes from :mod:`nerops.telemetry.sql`; the arithmetic on
what comes back from :mod:`nerops.telemetry.buckets`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import NamedTuple

from nerops.telemetry.buckets import EMPTY, Aggregate
from nerops.telemetry.metrics import KINDS, LIVE, TABLES, metric_spec, table_of
from nerops.telemetry.sql import Query, group_sql, step_sql


class SeriesPoint(NamedTuple):
    """One step of a time series: ``(start, group, aggregate)``; the step covers ``(start, start + step]``."""

    start: float
    group: str
    aggregate: Aggregate


class StoreReads:
    """Read methods over ``self._read(sql, params)``, which the store class defines."""

    _read: Callable[[str, Sequence[object]], list[tuple]]

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
        traffic: Sequence[str] | None = (LIVE,),
        endpoint: str | None = None,
        buckets: bool = False,
    ) -> Query:
        """The SQL :meth:`group` runs (``buckets=True``: the bucket-merging query) for evidence."""
        return group_sql(
            self._table_for(kind, metric), metric, start, end, by=by, deployments=deployments, label=label,
            traffic=traffic, endpoint=endpoint, buckets=buckets,
        )  # fmt: skip

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
        traffic: Sequence[str] | None = (LIVE,),
        endpoint: str | None = None,
        buckets: bool = False,
    ) -> dict[tuple[str, ...], Aggregate]:
        """One aggregate per group (e.g. per deployment) over ``(start, end]``; groups without rows are absent.

        ``traffic``: the traffic classes to read (default live only; None: every class).
        ``buckets``: also merge histogram buckets (needed for quantiles; one more query).
        """
        filters = {"by": by, "deployments": deployments, "label": label, "traffic": traffic, "endpoint": endpoint}
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
        traffic: Sequence[str] | None = (LIVE,),
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
            traffic=traffic,
            endpoint=endpoint,
            buckets=buckets and metric_spec(metric).is_histogram,
        )
        return groups.get((), EMPTY)

    def metric_series(
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
        traffic: Sequence[str] | None = (LIVE,),
        buckets: bool = False,
    ) -> list[SeriesPoint]:
        """Steps of ``step_s`` from ``start``: ``(step start, group, Aggregate)`` for steps with data, in order."""
        table = self._table_for(kind, metric)
        options = {"by": by, "deployment": deployment, "label": label, "traffic": traffic}
        query = step_sql(table, metric, start, end, step_s, **options)
        rows = self._read(query.sql, query.params)
        bucket_rows: dict[tuple[int, str], dict[float, float]] = {}
        if buckets:
            query = step_sql(table, metric, start, end, step_s, buckets=True, **options)
            for k, g, key, count in self._read(query.sql, query.params):
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
    raise ValueError(f"unknown signal kind {table!r}: use 'system', 'model' or 'controller'")
