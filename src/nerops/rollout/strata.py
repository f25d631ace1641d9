"""From a :class:`~nerops.rollout.verdicts.Look` to the per-interval arrays each sequential test reads.

A stratum is one interval and one traffic pairing: the candidate and the stable deployment read in the
same interval, in the classes the step makes comparable (never pooled across intervals or steps):

    readiness   (probe pairs only)
    shadow      candidate mirror   vs  stable live     (the same requests, copied)
    canary      candidate live     vs  stable live     (the split of live traffic)
    bake        candidate live     vs  stable mirror   (the old deployment kept warm)
    any step    candidate probe    vs  stable probe    (the same probe documents)

A pairing counts for a metric only when both of its classes are among the metric's ``traffic``
(latency reads ``live`` and ``probe``: a mirrored copy's latency is not comparable with a live one).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from nerops.rollout.policy import MetricPolicy
from nerops.rollout.verdicts import Look, StepSpan
from nerops.telemetry import metrics as m
from nerops.telemetry.buckets import Aggregate
from nerops.telemetry.source import Arm, ArmInterval, Series

PAIRINGS: dict[str, tuple[tuple[str, str], ...]] = {
    "readiness": (),
    "shadow": (("mirror", "live"),),
    "canary": (("live", "live"),),
    "bake": (("live", "mirror"),),
}
PROBE_PAIR = ("probe", "probe")


@dataclass(frozen=True)
class Cell:
    start: float
    end: float
    candidate: ArmInterval
    stable: ArmInterval | None  # None: a one-arm metric


def step_at(steps: tuple[StepSpan, ...], start: float) -> StepSpan | None:
    for span in reversed(steps):
        if span.start <= start and (span.end is None or start < span.end):
            return span
    return None


class Index:
    """The look's series indexed by (class, arm, interval start), built once per look."""

    def __init__(self, look: Look) -> None:
        self.look = look
        self.rows: dict[tuple[str, Arm, float], ArmInterval] = {
            (cls, row.arm, row.start): row for cls, series in look.series.items() for row in series.rows
        }
        covers = {(c.start, c.end) for series in look.series.values() for c in series.coverage}
        self.intervals = sorted(covers)

    def row(self, cls: str, arm: Arm, start: float, end: float) -> ArmInterval:
        return self.rows.get((cls, arm, start)) or ArmInterval(start, end, arm)

    def cells(self, metric: MetricPolicy) -> Iterator[Cell]:
        """The metric's strata, oldest first (one-arm metrics: the candidate in each class it reads)."""
        look, classes = self.look, set(metric.traffic)
        for start, end in self.intervals:
            span = step_at(look.steps, start)
            if span is None:
                continue
            if not metric.two_arms:
                for cls in sorted(classes & set(look.series)):
                    yield Cell(start, end, self.row(cls, look.candidate, start, end), None)
                continue
            for c_cls, s_cls in (*PAIRINGS[span.kind], PROBE_PAIR):
                if {c_cls, s_cls} <= classes and c_cls in look.series and s_cls in look.series:
                    yield Cell(
                        start,
                        end,
                        self.row(c_cls, look.candidate, start, end),
                        self.row(s_cls, look.stable, start, end),
                    )

    def measured_now(self, metric: MetricPolicy) -> bool:
        """Whether the current step gives this metric anything to read (latency has nothing in a shadow step)."""
        look, classes = self.look, set(metric.traffic)
        if not look.steps:
            return False
        kind = look.steps[-1].kind
        # probes measure only while they are sent: an empty probe series (the source answers every class) is not
        probing = "probe" in look.series and any(row.arm == look.candidate for row in look.series["probe"].rows)
        if not metric.two_arms:
            own = {"shadow": {"mirror"}, "canary": {"live"}, "bake": {"live"}}.get(kind, set())
            return bool(classes & (own | ({"probe"} if probing else set())))
        pairs = (*PAIRINGS[kind], *((PROBE_PAIR,) if probing else ()))
        return any({c, s} <= classes for c, s in pairs)

    def labels(self, metric: MetricPolicy) -> tuple[str, ...]:
        if self.look.labels is not None:
            return self.look.labels
        found = {label for cell in self.cells(metric) if cell.stable for label in cell.stable.labels(metric.metric)}
        return tuple(sorted(found))


def counts(cells: list[Cell], numerator: str, denominator: str, two_arms: bool = True) -> dict[str, np.ndarray]:
    """Events and exposure per stratum: ``x_c, e_c`` (and ``x_s, e_s`` for two arms)."""
    out = {
        "x_c": np.array([c.candidate.total(numerator) for c in cells], dtype=float),
        "e_c": np.array([c.candidate.total(denominator) for c in cells], dtype=float),
    }
    if two_arms:
        out["x_s"] = np.array([c.stable.total(numerator) if c.stable else 0.0 for c in cells], dtype=float)
        out["e_s"] = np.array([c.stable.total(denominator) if c.stable else 0.0 for c in cells], dtype=float)
    return out


def _aggregate(row: ArmInterval, metric: str, label: str | None) -> Aggregate:
    if label is None:
        return row.get(metric)
    counted = row.get(metric, label)
    return Aggregate(count=row.documents, sum=counted.sum, sumsq=counted.sumsq)


def moments(
    cells: list[Cell], metric: str, label: str | None = None, two_arms: bool = True
) -> dict[str, np.ndarray] | None:
    """Count, sum and sum of squares per stratum and arm; None when a stratum with data has no squares."""
    out: dict[str, list[float]] = {key: [] for key in ("n_c", "sum_c", "sq_c", "n_s", "sum_s", "sq_s")}
    for cell in cells:
        for suffix, row in (("c", cell.candidate), ("s", cell.stable)):
            if row is None:
                continue
            agg = _aggregate(row, metric, label)
            if agg.count and agg.sum and agg.sumsq is None:
                return None
            out[f"n_{suffix}"].append(agg.count)
            out[f"sum_{suffix}"].append(agg.sum)
            out[f"sq_{suffix}"].append(agg.sumsq or 0.0)
    return {key: np.array(values, dtype=float) for key, values in out.items() if two_arms or key.endswith("_c")}


def dense_buckets(agg: Aggregate, bounds: tuple[float, ...]) -> np.ndarray:
    """Sparse ``(upper bound, count)`` buckets -> counts per bucket of ``bounds`` (+ the open last one)."""
    position = {float(b): i for i, b in enumerate(bounds)}
    dense = np.zeros(len(bounds) + 1)
    for upper, count in agg.buckets:
        dense[position.get(float(upper), len(bounds))] += count
    return dense


def buckets(cells: list[Cell], metric: str) -> tuple[np.ndarray, np.ndarray]:
    bounds = m.metric_spec(metric).bounds
    width = len(bounds) + 1
    a = np.array([dense_buckets(c.candidate.get(metric), bounds) for c in cells]).reshape(len(cells), width)
    b = np.array([dense_buckets(c.stable.get(metric), bounds) for c in cells if c.stable]).reshape(len(cells), width)
    return a, b


def series_problems(look: Look) -> list[str]:
    """Why the look's data cannot be trusted: the source's error, a missing live series, loss, watermarks."""
    problems = [look.source_error] if look.source_error else []
    if not look.source_error and m.LIVE not in look.series:
        problems.append("no live series in this look: the source answered nothing for the rollout's window")
    for cls, series in sorted(look.series.items()):
        reason = series.problem()
        if reason:
            problems.append(f"{cls}: {reason}")
    return problems


def query_texts(look: Look) -> dict[str, str]:
    return {cls: series.query for cls, series in look.series.items() if isinstance(series, Series)}
