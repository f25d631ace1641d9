"""An OpenTelemetry metric exporter writing into the local telemetry store.

Used with a ``PeriodicExportingMetricReader`` and DELTA temporality: each export is one transaction of
pre-aggregated rows (one per metric and attribute set for the interval just ended), this writer's
watermark (the collection time: everything recorded before it is now stored) and the loss counted
since the last export. A killed process loses at most the interval not yet exported, and the next
writer of the endpoint records that as ``writer_lost`` loss; ``force_flush`` writes everything so far.

If the store cannot be written (locked past the busy timeout, disk full), the rows are kept and
written with the next export, up to ``max_pending`` rows (beyond: ``dropped_points``). Each refused
export is counted (``export_failures`` over the interval from the last watermark) and, while the store
refuses, the loss and the watermark are kept in a sidecar file that readers see
(:mod:`nerops.telemetry.loss`). Nothing is dropped silently.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
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
from nerops.telemetry.loss import HOST, LossCounter, recover_writers, remove_sidecar, write_sidecar
from nerops.telemetry.metrics import KINDS, LIVE, METRICS, TRAFFIC_CLASSES
from nerops.telemetry.points import Point
from nerops.telemetry.source import Loss, Watermark
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


def collection_time(metrics_data: MetricsData) -> float | None:
    """The latest data point's time in an export (the collection's end), in epoch seconds."""
    times = [
        point.time_unix_nano
        for resource_metrics in metrics_data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        for point in getattr(metric.data, "data_points", ())
    ]
    return max(times) / 1e9 if times else None


def points_from_metrics(metrics_data: MetricsData, dropped: list[int] | None = None) -> Iterator[Point]:
    """OTel delta Sum / Histogram data points of the catalogue's metrics -> store points.

    Metrics not in the catalogue (another library's instruments on the same provider) and empty
    points are skipped. Cumulative data (it would be counted twice) and points that lost their
    attributes to the SDK's cardinality limit are dropped and counted in ``dropped[0]``.
    """
    for resource_metrics in metrics_data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name not in METRICS or METRICS[metric.name].kind not in KINDS:
                    continue  # not ours, or not a signal (the controller writes its own points)
                data = metric.data
                if not isinstance(data, Sum | HistogramData):
                    continue
                if data.aggregation_temporality != AggregationTemporality.DELTA:
                    log.warning("metric %s: cumulative data dropped (the store keeps deltas)", metric.name)
                    if dropped is not None:
                        dropped[0] += len(data.data_points)
                    continue
                for point in data.data_points:
                    attributes = point.attributes or {}
                    if attributes.get("otel.metric.overflow") or attributes.get("traffic_class", LIVE) not in (
                        TRAFFIC_CLASSES
                    ):
                        if dropped is not None:
                            dropped[0] += 1
                        continue
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
        "traffic_class": str(attributes.get("traffic_class", LIVE)),
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
    """Writes each export into a :class:`TelemetryStore`, with this writer's watermark and loss."""

    def __init__(
        self,
        store: TelemetryStore,
        *,
        endpoint: str = "",
        loss: LossCounter | None = None,
        close_store_on_shutdown: bool = True,
        apply_retention: bool = True,
        max_pending: int = 100_000,
        export_interval_s: float = 0.0,
        clock=time.time,
    ) -> None:
        super().__init__(preferred_temporality=DELTA_TEMPORALITY)
        self.store = store
        self.endpoint = endpoint
        self.loss = loss or LossCounter()
        self.clock = clock
        self.export_interval_s = export_interval_s
        self.writer = f"{endpoint}@{HOST}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.started = clock()
        self._close_store = close_store_on_shutdown
        self._apply_retention = apply_retention
        self._max_pending = max_pending
        self._pending: list[Point] = []
        self._pending_loss: list[Loss] = []
        self._sidecar = False
        self._lock = threading.Lock()
        self._shutdown = False
        self.exported_to = self.started
        self.exported_points = 0
        self.failed_exports = 0
        try:  # announce this writer (readers then wait for its watermark) and close the dead ones
            recover_writers(store, endpoint, self.started)
            store.write([], watermark=self._mark(self.started))
        except (TelemetryStoreError, OSError) as exc:
            log.warning("telemetry store not writable at start: %s", exc)
            self._keep_sidecar()

    def _mark(self, exported_to: float, *, closed: bool = False) -> Watermark:
        return Watermark(
            self.writer, self.endpoint, exported_to, self.started, closed, os.getpid(), HOST, self.export_interval_s
        )

    def _keep_sidecar(self) -> None:
        try:
            write_sidecar(self.store.path, self._mark(self.exported_to), self._pending_loss)
            self._sidecar = True
        except OSError as exc:
            log.warning("telemetry loss sidecar not written: %s", exc)

    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: object) -> MetricExportResult:
        dropped = [0]
        points = list(points_from_metrics(metrics_data, dropped))
        if dropped[0]:
            self.loss.add("dropped_points", dropped[0])
        return self._write(points, collection_time(metrics_data) or self.clock())

    def _write(self, points: list[Point], collected: float, *, closed: bool = False) -> MetricExportResult:
        with self._lock:
            if self._shutdown:
                return MetricExportResult.FAILURE
            loss = self._pending_loss + self.loss.drain(
                self.exported_to, collected, writer=self.writer, endpoint=self.endpoint
            )
            batch = self._pending + points if self._pending else points
            try:
                self.store.write(batch, watermark=self._mark(collected, closed=closed), loss=loss)
            except (TelemetryStoreError, OSError) as exc:
                self.failed_exports += 1
                overflow = max(0, len(batch) - self._max_pending)
                self._pending = batch[overflow:]
                failure = Loss("export_failures", 1, self.exported_to, collected, "", self.writer, self.endpoint)
                self._pending_loss = [*loss, failure]
                if overflow:
                    self._pending_loss.append(
                        Loss("dropped_points", overflow, self.exported_to, collected, "", self.writer, self.endpoint)
                    )
                self._keep_sidecar()
                log.warning("telemetry export failed (%d points kept for the next export): %s", len(self._pending), exc)
                return MetricExportResult.FAILURE
            if self._sidecar:  # what it held is in the store now
                remove_sidecar(self.store.path, self.writer)
                self._sidecar = False
            self._pending, self._pending_loss = [], []
            self.exported_points += len(batch)
            self.exported_to = max(self.exported_to, collected)
            if self._apply_retention:
                try:
                    self.store.maybe_apply_retention()
                except TelemetryStoreError as exc:
                    log.warning("telemetry retention failed: %s", exc)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: object) -> None:
        if self._shutdown:
            return
        # the provider has flushed before this: close the watermark, so readers stop waiting for us
        if self._write([], self.clock(), closed=True) != MetricExportResult.SUCCESS:
            log.warning("telemetry exporter shut down with %d points not written", len(self._pending))
        with self._lock:
            self._shutdown = True
            if self._close_store:
                self.store.close()
