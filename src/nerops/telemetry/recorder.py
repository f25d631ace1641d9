"""Recording: the endpoint calls :class:`Telemetry` on its request path; OpenTelemetry does the rest.

Two kinds of signal, kept apart from the instrument up to the store's tables:

- system metrics, per answered request (:class:`RequestRecord`): latency, requests, 4xx, 5xx;
- model signals, per scored document (:class:`DocumentSignals`): entities found (overall and per
  label), empty predictions, documents, input length. Counts only: no resume text ever reaches
  telemetry.

Every point carries ``endpoint``, ``deployment``, ``model_version`` and ``mirrored`` ("true" for shadow
copies whose response was discarded). Recording is cheap: histograms go to OpenTelemetry's in-memory
aggregation; counters are running totals (a locked dict increment) that OpenTelemetry reads as
observable counters when it collects. Export happens on the reader's own thread.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from nerops.telemetry.exporter import LocalStoreExporter
from nerops.telemetry.metrics import (
    CLIENT_ERROR_COUNT,
    DOCUMENT_COUNT,
    EMPTY_PREDICTION_COUNT,
    ENTITIES_DETECTED_COUNT,
    ENTITIES_PER_LABEL,
    INFERENCE_LATENCY_MS,
    INPUT_LENGTH_CHARS,
    METRICS,
    REQUEST_COUNT,
    SERVER_ERROR_COUNT,
)
from nerops.telemetry.store import DEFAULT_RETENTION_DAYS, TelemetryStore

log = logging.getLogger("nerops.telemetry")

COUNTERS = (
    REQUEST_COUNT,
    CLIENT_ERROR_COUNT,
    SERVER_ERROR_COUNT,
    DOCUMENT_COUNT,
    EMPTY_PREDICTION_COUNT,
    ENTITIES_PER_LABEL,
)

METER_NAME = "nerops.telemetry"
_MAX_CACHED_ATTRIBUTE_SETS = 4096


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the endpoint's front door saw it."""

    endpoint: str
    deployment: str  # "" when the request could not be routed
    model_version: str  # "" when unknown
    status: int  # HTTP status sent to the client
    latency_ms: float
    mirrored: bool = False  # shadow copy (response discarded): still recorded, tagged mirrored="true"


@dataclass(frozen=True)
class DocumentSignals:
    """What telemetry keeps of one scored document: counts only, never text."""

    input_chars: int
    entities: int
    entities_per_label: Mapping[str, int]


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Telemetry:
    """The instruments, created once on a meter provider; ``record_*`` are cheap and never raise."""

    def __init__(self, meter_provider: MeterProvider, *, endpoint: str) -> None:
        self.meter_provider = meter_provider
        self.endpoint = endpoint
        self.store_path: Path | None = None  # set by local_telemetry
        meter = meter_provider.get_meter(METER_NAME)

        def histogram(name: str):
            spec = METRICS[name]
            return meter.create_histogram(
                name, unit=spec.unit, description=spec.description, explicit_bucket_boundaries_advisory=spec.bounds
            )

        def counter(name: str):
            spec = METRICS[name]
            return meter.create_observable_counter(
                name, callbacks=[functools.partial(self._observe, name)], unit=spec.unit, description=spec.description
            )

        self._latency = histogram(INFERENCE_LATENCY_MS)
        self._entities = histogram(ENTITIES_DETECTED_COUNT)
        self._input_length = histogram(INPUT_LENGTH_CHARS)
        # Counters are kept as plain running totals under a lock (a dict increment, well under a
        # microsecond) and reported to OpenTelemetry as observable counters when the reader collects.
        self._totals: dict[str, dict[tuple[str, ...], int]] = {name: {} for name in COUNTERS}
        self._totals_lock = threading.Lock()
        for name in COUNTERS:
            counter(name)
        self._attribute_sets: dict[tuple[str, ...], dict[str, str]] = {}
        self._counted_attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self._failures = 0
        self._shut_down = False

    def _attributes(self, endpoint: str, deployment: str, model_version: str, mirrored: bool, label: str | None = None):
        key = (endpoint, deployment, model_version, "true" if mirrored else "false", label or "")
        attributes = self._attribute_sets.get(key)
        if attributes is None:
            if len(self._attribute_sets) >= _MAX_CACHED_ATTRIBUTE_SETS:
                self._attribute_sets.clear()
            attributes = {"endpoint": key[0], "deployment": key[1], "model_version": key[2], "mirrored": key[3]}
            if label is not None:
                attributes["label"] = label
            self._attribute_sets[key] = attributes
        return attributes

    def _key(self, endpoint: str, deployment: str, model_version: str, mirrored: bool, label: str | None = None):
        return (endpoint, deployment, model_version, "true" if mirrored else "false", label or "")

    def _count(self, name: str, key: tuple[str, ...], value: int, label: str | None = None) -> None:
        totals = self._totals[name]
        with self._totals_lock:
            if key not in totals:
                self._counted_attributes.setdefault(key, self._attributes(*key[:3], key[3] == "true", label))
                totals[key] = 0
            totals[key] += value

    def _observe(self, name: str, options: CallbackOptions) -> list[Observation]:
        with self._totals_lock:
            items = list(self._totals[name].items())
        return [Observation(total, self._counted_attributes[key]) for key, total in items]

    def record_request(self, record: RequestRecord) -> None:
        """Latency and counts of one answered request (system metrics)."""
        try:
            attributes = self._attributes(
                record.endpoint or self.endpoint, record.deployment, record.model_version, record.mirrored
            )
            self._latency.record(max(0.0, float(record.latency_ms)), attributes)
            key = self._key(record.endpoint or self.endpoint, record.deployment, record.model_version, record.mirrored)
            self._count(REQUEST_COUNT, key, 1)
            if 400 <= record.status < 500:
                self._count(CLIENT_ERROR_COUNT, key, 1)
            elif record.status >= 500:
                self._count(SERVER_ERROR_COUNT, key, 1)
        except Exception as exc:  # telemetry must never fail a request
            self._failed(exc)

    def record_documents(
        self,
        *,
        deployment: str,
        model_version: str,
        documents: Sequence[DocumentSignals],
        mirrored: bool = False,
    ) -> None:
        """Model signals of the documents scored in one request (counts only)."""
        if not documents:
            return
        try:
            attributes = self._attributes(self.endpoint, deployment, model_version, mirrored)
            empty = 0
            per_label: dict[str, int] = {}
            for document in documents:
                self._entities.record(document.entities, attributes)
                self._input_length.record(document.input_chars, attributes)
                if document.entities == 0:
                    empty += 1
                for label, count in document.entities_per_label.items():
                    if count:
                        per_label[label] = per_label.get(label, 0) + count
            key = self._key(self.endpoint, deployment, model_version, mirrored)
            self._count(DOCUMENT_COUNT, key, len(documents))
            if empty:
                self._count(EMPTY_PREDICTION_COUNT, key, empty)
            for label, count in per_label.items():
                labelled = self._key(self.endpoint, deployment, model_version, mirrored, label)
                self._count(ENTITIES_PER_LABEL, labelled, count, label)
        except Exception as exc:  # telemetry must never fail a request
            self._failed(exc)

    def _failed(self, exc: Exception) -> None:
        self._failures += 1
        if self._failures == 1 or self._failures % 1000 == 0:
            log.warning("telemetry recording failed (%d so far): %s", self._failures, type(exc).__name__)

    def flush(self, timeout_millis: float = 10_000) -> bool:
        """Export everything recorded so far (into the store, for :func:`local_telemetry`)."""
        force_flush = getattr(self.meter_provider, "force_flush", None)
        return bool(force_flush(timeout_millis)) if force_flush else True

    def shutdown(self) -> None:
        """Flush and stop the provider (its exporter closes the store). Safe to call twice."""
        if self._shut_down:
            return
        self._shut_down = True
        shutdown = getattr(self.meter_provider, "shutdown", None)
        if shutdown is not None:
            try:
                shutdown()
            except Exception as exc:  # shutting down twice logs in the SDK; never raise at exit
                log.debug("telemetry shutdown: %s", exc)


def local_telemetry(
    store_path: Path,
    *,
    endpoint: str,
    export_interval_s: float = 5.0,
    retention_days: float = DEFAULT_RETENTION_DAYS,
) -> Telemetry:
    """Telemetry exported every ``export_interval_s`` into the SQLite store at ``store_path`` (created if needed)."""
    store = TelemetryStore(store_path, retention_days=retention_days)
    reader = PeriodicExportingMetricReader(
        LocalStoreExporter(store),
        export_interval_millis=export_interval_s * 1000.0,
        export_timeout_millis=max(30_000.0, export_interval_s * 1000.0),
    )
    provider = SdkMeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "nerops-endpoint", "nerops.endpoint": endpoint}),
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
    telemetry = Telemetry(provider, endpoint=endpoint)
    telemetry.store_path = Path(store_path)
    return telemetry
