"""An OpenTelemetry metric exporter writing into the local telemetry store.

Used with a ``PeriodicExportingMetricReader`` and DELTA temporality: each export is one transaction of
pre-aggregated rows (one per metric and attribute set for the interval just ended). A killed process
loses at most the interval not yet exported; ``force_flush`` on the provider writes everything so far.
If the store cannot be written (locked past the busy timeout, disk full), the rows are kept and
written with the next export, up to ``max_pending`` rows.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from opentelemetry.sdk.metrics import (
    Counter,
    Histogram,
    ObservableCounter,
    ObservableGauge,
    ObservableUpDownCounter,
    UpDownCounter,
)
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    HistogramDataPoint,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    NumberDataPoint,
    Sum,
)
from opentelemetry.sdk.metrics.export import (
    Histogram as HistogramData,
)

from nerops.telemetry.buckets import sparse_buckets
from nerops.telemetry.metrics import METRICS
from nerops.telemetry.points import Point
from nerops.telemetry.store import TelemetryStore, TelemetryStoreError

log = logging.getLogger("nerops.telemetry")

DELTA_TEMPORALITY = {
    Counter: AggregationTemporality.DELTA,
    Histogram: AggregationTemporality.DELTA,
    ObservableCounter: AggregationTemporality.DELTA,
    UpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableUpDownCounter: AggregationTemporality.CUMULATIVE,
    ObservableGauge: AggregationTemporality.CUMULATIVE,
}


def points_from_metrics(metrics_data: MetricsData) -> Iterator[Point]:
    """OTel delta Sum / Histogram data points of the catalogue's metrics -> store points.

    Metrics not in the catalogue (another library's instruments on the same provider), cumulative
    data (it would be counted twice) and empty points are skipped.
    """
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name not in METRICS:
                    continue
                data = metric.data
                if not isinstance(data, Sum | HistogramData):
                    continue
                if data.aggregation_temporality != AggregationTemporality.DELTA:
                    log.warning("metric %s: cumulative data skipped (the store keeps deltas)", metric.name)
                    continue
                for point in data.data_points:
                    converted = _point(metric.name, point)
                    if converted is not None:
                        yield converted


def _point(name: str, point: NumberDataPoint | HistogramDataPoint) -> Point | None:
    attributes = point.attributes or {}
    end = point.time_unix_nano / 1e9
    common = {
        "time": end,
        "metric": name,
        "endpoint": str(attributes.get("endpoint", "")),
        "deployment": str(attributes.get("deployment", "")),
        "model_version": str(attributes.get("model_version", "")),
        "mirrored": str(attributes.get("mirrored", "false")).lower() == "true",
        "label": str(attributes.get("label", "")),
        "interval_s": max(0.0, end - point.start_time_unix_nano / 1e9),
    }
    if isinstance(point, HistogramDataPoint):
        if not point.count:
            return None
        buckets = sparse_buckets(point.explicit_bounds, point.bucket_counts) if point.explicit_bounds else ()
        return Point(
            item_count=point.count, sum=float(point.sum), min=point.min, max=point.max, buckets=buckets, **common
        )
    if isinstance(point, NumberDataPoint):
        if not point.value:
            return None
        return Point(item_count=point.value, sum=float(point.value), **common)
    return None


class LocalStoreExporter(MetricExporter):
    """Writes each export into a :class:`TelemetryStore` (system metrics and model signals to their tables)."""

    def __init__(
        self,
        store: TelemetryStore,
        *,
        close_store_on_shutdown: bool = True,
        apply_retention: bool = True,
        max_pending: int = 100_000,
    ) -> None:
        super().__init__(preferred_temporality=DELTA_TEMPORALITY)
        self.store = store
        self._close_store = close_store_on_shutdown
        self._apply_retention = apply_retention
        self._max_pending = max_pending
        self._pending: list[Point] = []
        self._lock = threading.Lock()
        self._shutdown = False
        self.exported_points = 0
        self.failed_exports = 0

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        points = list(points_from_metrics(metrics_data))
        with self._lock:
            if self._shutdown:
                return MetricExportResult.FAILURE
            batch = self._pending + points if self._pending else points
            if not batch:
                return MetricExportResult.SUCCESS
            try:
                self.store.write(batch)
            except (TelemetryStoreError, OSError) as exc:
                self.failed_exports += 1
                self._pending = batch[-self._max_pending :]
                log.warning("telemetry export failed (%d points kept for the next export): %s", len(self._pending), exc)
                return MetricExportResult.FAILURE
            self._pending = []
            self.exported_points += len(batch)
            if self._apply_retention:
                try:
                    self.store.maybe_apply_retention()
                except TelemetryStoreError as exc:
                    log.warning("telemetry retention failed: %s", exc)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        with self._lock:
            if self._shutdown:
                return
            self._shutdown = True
            if self._pending:
                log.warning("telemetry exporter shut down with %d points not written", len(self._pending))
            if self._close_store:
                self.store.close()
