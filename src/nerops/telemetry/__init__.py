"""Telemetry: OpenTelemetry instruments, the local store, the metrics-source port, alert rules.

Recording (the endpoint's side)
    records.py      RequestRecord, DocumentSignals: what the endpoint hands over (counts only)
    recorder.py     Telemetry (record_request / _documents / _agreement / _mirror_dropped), local_telemetry
    agreement.py    compare(candidate, reference): shadow / probe agreement per label, pure
    metrics.py      the instrument catalogue: names, kinds, units, buckets, traffic classes, *_sumsq
    exporter.py     LocalStoreExporter: OTel delta points -> store rows, with watermark and loss
    loss.py         LossCounter, sidecar files, recovering writers that died
    disabled.py     DisabledTelemetry: the same calls, recording nothing (only to measure the cost)
Storing and reading
    buckets.py      sparse buckets, Aggregate (count, sum, sum of squares, min, max), quantile: pure
    points.py       Point: one stored row
    rollout_points.py  RolloutPoint: one row of the controller's own metrics (controller_points), last looks
    sql.py          the store's SQL text: pure
    schema.py       tables and upgrades (schema 2)
    store.py        TelemetryStore (SQLite, WAL): writes, retention, the port; store_reads.py: reads
    source.py       the MetricsSource port: series(...) -> Series, Arm, Coverage, Loss, Watermark
    local_source.py the port on the SQLite store
Alert rules (alerts.py imports them all)
    durations.py, rules.py, assessment.py (one rule's state, pure), results.py, evaluation.py,
    formatting.py, kql.py (the same rules for Azure Monitor), staleness.py (rules over the controller's
    own metrics: rollout_stuck, locally and in KQL)
"""

from nerops.telemetry.buckets import Aggregate, quantile
from nerops.telemetry.metrics import MODEL, MODEL_METRICS, SYSTEM, SYSTEM_METRICS
from nerops.telemetry.points import Point
from nerops.telemetry.recorder import DocumentSignals, RequestRecord, Telemetry, local_telemetry
from nerops.telemetry.source import Arm, MetricsSource, Series
from nerops.telemetry.store import SeriesPoint, TelemetryStore, TelemetryStoreError

__all__ = [
    "MODEL",
    "MODEL_METRICS",
    "SYSTEM",
    "SYSTEM_METRICS",
    "Aggregate",
    "Arm",
    "DocumentSignals",
    "MetricsSource",
    "Point",
    "RequestRecord",
    "Series",
    "SeriesPoint",
    "Telemetry",
    "TelemetryStore",
    "TelemetryStoreError",
    "local_telemetry",
    "quantile",
]
