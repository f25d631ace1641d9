"""The metrics-source port on the local store: :func:`read_series` (``TelemetryStore.series`` calls it).

Per table, one grouped query (per step, deployment, model version, metric, label) and one for the
buckets of the histograms asked for; sums of squares come from the companion ``*_sumsq`` counters
and are folded into their metric's :class:`Aggregate`. Completeness comes from the writers'
watermarks and the loss records, in the store and in the sidecar files of writers that could not
reach it (see :mod:`nerops.telemetry.loss`). Reads stop at the lowest open watermark.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from nerops.telemetry.buckets import EMPTY, Aggregate
from nerops.telemetry.loss import read_sidecars, writer_alive
from nerops.telemetry.metrics import KINDS, SQUARES, TABLES, metric_spec
from nerops.telemetry.source import Arm, ArmInterval, Coverage, Loss, Series, Watermark, traffic_classes
from nerops.telemetry.sql import Query, arm_series_sql

if TYPE_CHECKING:
    from nerops.telemetry.store import TelemetryStore

Key = tuple[int, str, str]  # step, deployment, model version
MAX_INTERVALS = 10_000


def read_series(
    store: TelemetryStore,
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
    """See :class:`nerops.telemetry.source.MetricsSource`."""
    classes = traffic_classes(traffic_class)
    if step <= 0 or end <= start:
        raise ValueError(f"need start < end and a positive step, not ({start}, {end}] by {step}")
    steps = max(1, math.ceil((end - start) / step - 1e-9))
    if steps > MAX_INTERVALS:
        raise ValueError(
            f"{steps} intervals of {step} s in ({start}, {end}]: at most {MAX_INTERVALS}, take a longer step"
        )
    writers, losses, queries = read_coverage(store, endpoint, start, end)
    lowest = _lowest(writers)
    read_end = start if lowest is None else min(end, lowest)
    raw: dict[Key, dict[tuple[str, str], Aggregate]] = {}
    if read_end > start:
        deployments = None
        if arms is not None and all(arm.deployment is not None for arm in arms):
            deployments = sorted({arm.deployment for arm in arms})
        options = {"endpoint": endpoint, "deployments": deployments, "traffic": classes}
        for kind in KINDS:
            names = [name for name in metrics if metric_spec(name).kind == kind]
            if names:
                names = _with_squares(names) if squares else names
                queries += _read_table(store, TABLES[kind], names, start, read_end, step, options, raw, buckets)
    coverage = tuple(
        Coverage(
            start + k * step,
            min(end, start + (k + 1) * step),
            lowest,
            tuple(x for x in losses if x.touches(start + k * step, min(end, start + (k + 1) * step))),
        )
        for k in range(steps)
    )
    rows = _by_arm(raw, arms, start, step, end)
    text = "\n".join(str(query) for query in queries)
    return Series(endpoint, start, end, step, classes, rows, coverage, tuple(writers), text)


def read_coverage(
    store: TelemetryStore, endpoint: str | None, start: float, end: float
) -> tuple[list[Watermark], list[Loss], list[Query]]:
    """The writers (store and sidecars) of ``endpoint`` (None: all) and the loss touching ``(start, end]``."""
    where, params = ("WHERE endpoint = ?", [endpoint]) if endpoint is not None else ("", [])
    writers_query = Query(
        f"SELECT writer, endpoint, exported_to, started, closed, pid, host, interval_s FROM watermarks {where}", params
    )
    writers = {
        row[0]: Watermark(row[0], row[1], row[2], row[3], bool(row[4]), row[5], row[6], row[7])
        for row in store._read(writers_query.sql, writers_query.params)
    }
    loss_query = Query(
        "SELECT kind, count, start, end, signal, writer, endpoint FROM telemetry_loss WHERE end >= ? AND start < ?"
        + (" AND endpoint = ?" if endpoint is not None else ""),
        [float(start), float(end), *params],
    )
    losses = [Loss(*row) for row in store._read(loss_query.sql, loss_query.params)]
    last_seen = {writer: mark.exported_to for writer, mark in writers.items()}
    for mark, pending in read_sidecars(store.path):
        if endpoint is None or mark.endpoint == endpoint:
            stored = writers.get(mark.writer)
            exported = mark.exported_to if stored is None else min(stored.exported_to, mark.exported_to)
            writers[mark.writer] = replace(mark, exported_to=exported, closed=False)
            losses += [loss for loss in pending if loss.touches(start, end)]
            last_seen[mark.writer] = max([mark.exported_to, *(loss.end for loss in pending)])
    for writer, mark in list(writers.items()):  # a writer that died holds nothing back, but its last interval is lost
        if not mark.closed and mark.interval_s > 0 and not writer_alive(mark):
            lost = Loss(
                "writer_lost", 1, mark.exported_to, last_seen[writer] + mark.interval_s, "", writer, mark.endpoint
            )
            writers[writer] = replace(mark, closed=True)
            losses += [lost] if lost.touches(start, end) else []
    return sorted(writers.values(), key=lambda w: w.writer), losses, [writers_query, loss_query]


def lowest_watermark(store: TelemetryStore, endpoint: str | None) -> float | None:
    """See :meth:`nerops.telemetry.source.MetricsSource.watermark`."""
    return _lowest(read_coverage(store, endpoint, 0.0, 0.0)[0])


def _lowest(writers: Sequence[Watermark]) -> float | None:
    if not writers:
        return None
    open_marks = [mark.exported_to for mark in writers if not mark.closed]
    return min(open_marks) if open_marks else math.inf


def _with_squares(names: Sequence[str]) -> list[str]:
    return list(dict.fromkeys([*names, *(SQUARES[name] for name in names if name in SQUARES)]))


def _read_table(store, table, names, start, end, step, options, raw, buckets: bool) -> list[Query]:
    query = arm_series_sql(table, names, start, end, step, **options)
    for k, deployment, version, metric, label, count, total, low, high, points in store._read(query.sql, query.params):
        raw.setdefault((k, deployment, version), {})[(metric, label)] = Aggregate(
            count or 0.0, total or 0.0, low, high, (), points
        )
    queries = [query]
    histograms = [name for name in names if metric_spec(name).is_histogram]
    if histograms and buckets:
        query = arm_series_sql(table, histograms, start, end, step, buckets=True, **options)
        merged: dict[tuple[Key, str, str], dict[float, float]] = {}
        for k, deployment, version, metric, label, bound, count in store._read(query.sql, query.params):
            merged.setdefault(((k, deployment, version), metric, label), {})[float(bound)] = count
        for (key, metric, label), counts in merged.items():
            values = raw.setdefault(key, {})
            values[(metric, label)] = replace(values.get((metric, label), EMPTY), buckets=tuple(sorted(counts.items())))
        queries.append(query)
    for values in raw.values():  # fold each companion's sum into its metric as the sum of squares
        for (metric, label), aggregate in list(values.items()):
            parent = metric_spec(metric).squares_of
            if parent is not None:
                values[(parent, label)] = replace(values.get((parent, label), EMPTY), sumsq=aggregate.sum)
                del values[(metric, label)]
    return queries


def _by_arm(raw, arms: Sequence[Arm] | None, start: float, step: float, end: float) -> tuple[ArmInterval, ...]:
    merged: dict[tuple[int, Arm], dict[tuple[str, str], Aggregate]] = {}
    for (k, deployment, version), values in raw.items():
        targets = [Arm(deployment, version)] if arms is None else [a for a in arms if a.matches(deployment, version)]
        for arm in targets:
            into = merged.setdefault((k, arm), {})
            for key, aggregate in values.items():
                into[key] = into[key].merge(aggregate) if key in into else aggregate
    return tuple(
        ArmInterval(start + k * step, min(end, start + (k + 1) * step), arm, values)
        for (k, arm), values in sorted(merged.items(), key=lambda item: (item[0][0], str(item[0][1])))
    )
