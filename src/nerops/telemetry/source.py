"""The metrics-source port: what the rollout judge and the alert rules read, whatever stores the telemetry.

    source.series(endpoint, arms, metrics, start, end, step, traffic_class) -> Series

A :class:`Series` holds, per interval of ``step`` seconds in ``(start, end]`` and per arm (deployment,
model version), the merged :class:`~nerops.telemetry.buckets.Aggregate` of every metric asked for
(count, sum, sum of squares, min, max, buckets), and per interval its :class:`Coverage`: whether every
writer's watermark has passed the interval's end, and the telemetry loss that touches it. It keeps
the query text as evidence. Fail closed: :meth:`Series.problem` names why an interval cannot be
judged (loss, a watermark behind or missing); callers turn that into ``error``, never ``no_data``.

Implementations: :class:`~nerops.telemetry.store.TelemetryStore` (local, SQLite). The Azure adapter
(Log Analytics over ``AppMetrics``) implements the same protocol; ``tests/test_metrics_source.py``
is the contract both must pass.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from nerops.telemetry import metrics as m
from nerops.telemetry.buckets import EMPTY, Aggregate


@dataclass(frozen=True, order=True)
class Arm:
    """A deployment and model version; ``None`` matches any (``Arm(None)``: the whole endpoint)."""

    deployment: str | None
    model_version: str | None = None

    def matches(self, deployment: str, model_version: str) -> bool:
        return (self.deployment is None or self.deployment == deployment) and (
            self.model_version is None or self.model_version == model_version
        )

    def __str__(self) -> str:
        name = "(endpoint)" if self.deployment is None else self.deployment or "(unrouted)"
        return name if self.model_version is None else f"{name} v{self.model_version}"


ENDPOINT = Arm(None)


@dataclass(frozen=True)
class Loss:
    """Telemetry a writer could not store: ``count`` of ``kind`` over ``(start, end]``.

    kinds: ``dropped_points`` (not exported: pending buffer full, cardinality overflow),
    ``recording_failures`` (a record call failed), ``export_failures`` (an export the store refused),
    ``late_points`` (rows older than their writer's watermark: refused), ``writer_lost`` (a writer that
    died without closing: its last interval is unknown). ``signal``: system, model, or "" for both.
    """

    kind: str
    count: float
    start: float
    end: float
    signal: str = ""
    writer: str = ""
    endpoint: str = ""

    def touches(self, start: float, end: float, signal: str | None = None) -> bool:
        """Whether this loss overlaps ``(start, end]`` (a loss at one instant: that instant is inside)."""
        overlaps = self.start < end and self.end > start if self.end > self.start else start < self.end <= end
        return overlaps and (signal is None or self.signal in ("", signal))


@dataclass(frozen=True)
class Watermark:
    """A writer's promise: everything it recorded up to ``exported_to`` is stored (``closed``: it stopped)."""

    writer: str
    endpoint: str
    exported_to: float
    started: float = 0.0
    closed: bool = False
    pid: int | None = None
    host: str = ""
    interval_s: float = 0.0  # how often it exports (0: unknown)


@dataclass(frozen=True)
class Coverage:
    """One interval's completeness: the lowest open watermark (None: no writer at all) and the loss in it."""

    start: float
    end: float
    watermark: float | None
    loss: tuple[Loss, ...] = ()

    def problem(self, signal: str | None = None) -> str | None:
        """Why this interval cannot be judged for ``signal`` (None: it can)."""
        if self.watermark is None:
            return f"no telemetry watermark for ({self.start:.0f}, {self.end:.0f}]: no writer has reported"
        if self.watermark < self.end:
            return f"telemetry watermark {self.watermark:.0f} is behind the interval end {self.end:.0f}"
        lost = [loss for loss in self.loss if loss.touches(self.start, self.end, signal)]
        if lost:
            what = ", ".join(f"{loss.count:g} {loss.kind}" for loss in lost)
            return f"telemetry loss in ({self.start:.0f}, {self.end:.0f}]: {what}"
        return None


@dataclass(frozen=True)
class ArmInterval:
    """One arm over one interval: an :class:`Aggregate` per ``(metric, label)``."""

    start: float
    end: float
    arm: Arm
    values: Mapping[tuple[str, str], Aggregate] = field(default_factory=dict)

    def get(self, metric: str, label: str = "") -> Aggregate:
        return self.values.get((metric, label), EMPTY)

    def total(self, metric: str, label: str = "") -> float:
        return self.get(metric, label).sum

    @property
    def requests(self) -> float:
        return self.total(m.REQUEST_COUNT)

    @property
    def server_errors(self) -> float:
        return self.total(m.SERVER_ERROR_COUNT)

    @property
    def latency(self) -> Aggregate:
        """Latency in ms: count, sum, sum of squares, min, max, buckets."""
        return self.get(m.INFERENCE_LATENCY_MS)

    @property
    def documents(self) -> float:
        return self.total(m.DOCUMENT_COUNT)

    @property
    def empty_predictions(self) -> float:
        return self.total(m.EMPTY_PREDICTION_COUNT)

    @property
    def entities(self) -> Aggregate:
        """Entities per document: count (documents), sum, sum of squares."""
        return self.get(m.ENTITIES_DETECTED_COUNT)

    def labels(self, metric: str = m.ENTITIES_PER_LABEL) -> list[str]:
        return sorted({label for name, label in self.values if name == metric and label})

    def entities_of(self, label: str) -> Aggregate:
        """Entities of one label per document: count = documents, sum and sum of squares over documents."""
        counted = self.get(m.ENTITIES_PER_LABEL, label)
        return Aggregate(count=self.documents, sum=counted.sum, sumsq=counted.sumsq, points=counted.points)

    def agreement(self, label: str) -> tuple[float, float, float]:
        """Entities of ``label``: (in both answers, only the candidate's, only the reference's)."""
        matched = self.total(m.AGREEMENT_MATCHED, label)
        return matched, self.total(m.AGREEMENT_CANDIDATE_ONLY, label), self.total(m.AGREEMENT_REFERENCE_ONLY, label)

    @property
    def mirror_dropped(self) -> float:
        return self.total(m.MIRROR_DROPPED_COUNT)


@dataclass(frozen=True)
class Series:
    """What :meth:`MetricsSource.series` returns (see the module docstring)."""

    endpoint: str | None
    start: float
    end: float
    step: float
    traffic_classes: tuple[str, ...]
    rows: tuple[ArmInterval, ...]
    coverage: tuple[Coverage, ...]
    writers: tuple[Watermark, ...] = ()
    query: str = ""

    @property
    def watermark(self) -> float | None:
        """The lowest watermark of the writers still open (inf: all closed; None: no writer ever reported)."""
        if not self.writers:
            return None
        open_marks = [w.exported_to for w in self.writers if not w.closed]
        return min(open_marks) if open_marks else math.inf

    @property
    def loss(self) -> tuple[Loss, ...]:
        return tuple(dict.fromkeys(loss for cover in self.coverage for loss in cover.loss))

    def intervals(self) -> list[tuple[float, float]]:
        return [(cover.start, cover.end) for cover in self.coverage]

    def arms(self) -> list[Arm]:
        return sorted({row.arm for row in self.rows}, key=lambda arm: (str(arm.deployment), str(arm.model_version)))

    def at(self, arm: Arm, start: float) -> ArmInterval:
        """The arm's values in the interval starting at ``start`` (empty when it had no data)."""
        for row in self.rows:
            if row.arm == arm and row.start == start:
                return row
        return ArmInterval(start, start + self.step, arm)

    def of(self, arm: Arm) -> Iterator[ArmInterval]:
        """The arm over every interval, oldest first (empty intervals included)."""
        for cover in self.coverage:
            yield self.at(arm, cover.start)

    def problem(self, signal: str | None = None) -> str | None:
        """The first reason an interval cannot be judged for ``signal`` (None: every interval can)."""
        for cover in self.coverage:
            if (reason := cover.problem(signal)) is not None:
                return reason
        return None


@runtime_checkable
class MetricsSource(Protocol):
    """Where the judge and the alert rules read telemetry (see the module docstring)."""

    def series(
        self,
        endpoint: str | None,
        arms: Sequence[Arm] | None,
        metrics: Sequence[str],
        start: float,
        end: float,
        step: float,
        traffic_class: str | Sequence[str] = m.LIVE,
        *,
        buckets: bool = True,
        squares: bool = True,
    ) -> Series:
        """Per interval and arm (``arms=None``: every deployment and version with data), with coverage.

        ``buckets`` / ``squares``: also the histograms' bucket counts / the sums of squares (a reader that
        needs neither, such as a mean or a ratio rule, saves most of the cost by saying so).
        """
        ...

    def watermark(self, endpoint: str | None) -> float | None:
        """The lowest watermark of the endpoint's open writers (inf: all closed; None: none ever reported)."""
        ...


def judgeable_now(source: MetricsSource, endpoint: str | None, now: float) -> float:
    """The latest time a rule can be judged at: ``now``, or the lowest watermark if that is earlier.

    Evaluating at ``now`` while an endpoint runs would always find the last export interval incomplete;
    evaluating at the watermark judges everything that is complete. No watermark at all: ``now`` (and
    the evaluation says why it cannot judge).
    """
    mark = source.watermark(endpoint)
    return now if mark is None else min(now, mark)


def traffic_classes(traffic_class: str | Sequence[str]) -> tuple[str, ...]:
    """``"live"`` or ``["live", "probe"]`` -> a checked tuple of traffic classes."""
    classes = (traffic_class,) if isinstance(traffic_class, str) else tuple(traffic_class)
    unknown = [name for name in classes if name not in m.TRAFFIC_CLASSES]
    if unknown or not classes:
        raise ValueError(f"traffic classes {unknown or '[]'}: choose from {', '.join(m.TRAFFIC_CLASSES)}")
    return classes
