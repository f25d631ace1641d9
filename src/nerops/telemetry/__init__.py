"""Telemetry: OpenTelemetry instruments, the local store, alert rules.

recorder.py  Telemetry, RequestRecord, DocumentSignals, local_telemetry: what the endpoint calls
metrics.py   the instrument catalogue (names, system metric or model signal, units, buckets)
exporter.py  LocalStoreExporter: OTel delta points -> store rows
store.py     TelemetryStore (SQLite, WAL): write, aggregate, group, series, deployments, retention
alerts.py    alert rules (alerts/rules.yaml): load, evaluate, judge, format_results
kql.py       a rule compiled to KQL for Azure Monitor (AppMetrics)
"""

from nerops.telemetry.buckets import Aggregate, quantile
from nerops.telemetry.metrics import MODEL, MODEL_METRICS, SYSTEM, SYSTEM_METRICS
from nerops.telemetry.points import Point
from nerops.telemetry.recorder import DocumentSignals, RequestRecord, Telemetry, local_telemetry
from nerops.telemetry.store import SeriesPoint, TelemetryStore, TelemetryStoreError

__all__ = [
    "MODEL",
    "MODEL_METRICS",
    "SYSTEM",
    "SYSTEM_METRICS",
    "Aggregate",
    "DocumentSignals",
    "Point",
    "RequestRecord",
    "SeriesPoint",
    "Telemetry",
    "TelemetryStore",
    "TelemetryStoreError",
    "local_telemetry",
    "quantile",
]
