"""One stored row: a metric's pre-aggregated measurements over one export interval for one attribute set."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from nerops.telemetry.buckets import bucket_counts, encode_buckets, sparse_buckets
from nerops.telemetry.metrics import LIVE, SQUARES, TRAFFIC_CLASSES, metric_spec


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
    traffic_class: str = LIVE
    label: str = ""
    buckets: tuple[tuple[float, int], ...] = ()
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        if self.traffic_class not in TRAFFIC_CLASSES:
            raise ValueError(f"unknown traffic class {self.traffic_class!r}: use one of {', '.join(TRAFFIC_CLASSES)}")

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
        traffic_class: str = LIVE,
        label: str = "",
        interval_s: float = 0.0,
    ) -> Point:
        """A counter's increase over the interval ending at ``time``."""
        return cls(
            time, metric, endpoint, deployment, model_version, value, value, None, None, traffic_class, label, (),
            interval_s,
        )  # fmt: skip

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
        traffic_class: str = LIVE,
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
            traffic_class,
            label,
            sparse_buckets(bounds, bucket_counts(values, bounds)) if values else (),
            interval_s,
        )

    @classmethod
    def measured(cls, time: float, metric: str, values: Sequence[float], **identity: object) -> list[Point]:
        """A histogram row and its sum-of-squares companion, as the recorder exports them (tests, benchmarks)."""
        square = float(sum(value * value for value in values))
        return [cls.histogram(time, metric, values, **identity), cls.counter(time, SQUARES[metric], square, **identity)]

    def row(self) -> tuple[object, ...]:
        return (
            float(self.time),
            float(self.interval_s),
            self.metric,
            self.endpoint,
            self.deployment,
            self.model_version,
            self.traffic_class,
            self.label,
            self.item_count,
            float(self.sum),
            self.min,
            self.max,
            encode_buckets(self.buckets),
        )
