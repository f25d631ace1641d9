"""Recording: the endpoint calls :class:`Telemetry` on its request path; OpenTelemetry does the rest.

Two kinds of signal, kept apart from the instrument up to the store's tables:

- system metrics, per answered request (:class:`RequestRecord`): latency, requests, 4xx, 5xx;
- model signals, per scored document (:class:`DocumentSignals`): entities found (overall and per
  label), empty predictions, documents, input length. Counts only: no resume text ever reaches
  telemetry.

Every point carries ``endpoint``, ``deployment``, ``model_version`` and ``traffic_class`` (live, mirror,
probe, smoke). Every histogram has a sum-of-squares companion counter, and so do entities per label
per document (dispersion, for mean tests); shadow agreement and dropped mirror copies are counters
too. A record call that fails is counted as loss (:class:`~nerops.telemetry.loss.LossCounter`) and
stored with the next export. Recording is cheap: histograms go to OpenTelemetry's in-memory
aggregation; counters are running totals (a locked dict increment) that OpenTelemetry reads as
observable counters when it collects. Export happens on the reader's own thread.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from nerops.telemetry.agreement import Agreement
from nerops.telemetry.exporter import LocalStoreExporter
from nerops.telemetry.loss import LossCounter
from nerops.telemetry.metrics import (
    AGREEMENT_CANDIDATE_ONLY,
    AGREEMENT_DOCUMENTS,
    AGREEMENT_EXACT_DOCUMENTS,
    AGREEMENT_MATCHED,
    AGREEMENT_REFERENCE_ONLY,
    CLIENT_ERROR_COUNT,
    DOCUMENT_COUNT,
    EMPTY_PREDICTION_COUNT,
    ENTITIES_DETECTED_COUNT,
    ENTITIES_PER_LABEL,
    INFERENCE_LATENCY_MS,
    INPUT_LENGTH_CHARS,
    KINDS,
    LATENCY_EDGES_MS,
    LIVE,
    METRICS,
    MIRROR,
    MIRROR_DROPPED_COUNT,
    MODEL,
    REQUEST_COUNT,
    SERVER_ERROR_COUNT,
    SUMSQ_SUFFIX,
    SYSTEM,
    TRAFFIC_CLASSES,
    latency_over,
)
from nerops.telemetry.records import DocumentSignals, RequestRecord
from nerops.telemetry.store import DEFAULT_RETENTION_DAYS, TelemetryStore

log = logging.getLogger("nerops.telemetry")

# the endpoint's counters (the controller's gauges are written by the controller itself)
COUNTERS = tuple(name for name, spec in METRICS.items() if spec.instrument == "counter" and spec.kind in KINDS)
HEARTBEAT = "nerops.telemetry.heartbeat"

METER_NAME = "nerops.telemetry"
_MAX_CACHED_ATTRIBUTE_SETS = 4096


def _checked(traffic_class: str) -> str:
    if traffic_class not in TRAFFIC_CLASSES:
        raise ValueError(f"unknown traffic class {traffic_class!r}")
    return traffic_class


def status_class(status: int) -> str:
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


class Telemetry:
    """The instruments, created once on a meter provider; ``record_*`` are cheap and never raise."""

    def __init__(self, meter_provider: MeterProvider, *, endpoint: str, loss: LossCounter | None = None) -> None:
        self.meter_provider = meter_provider
        self.endpoint = endpoint
        self.store_path: Path | None = None  # set by local_telemetry
        self.loss = loss or LossCounter()
        meter = meter_provider.get_meter(METER_NAME)

        def histogram(name: str):
            spec = METRICS[name]
            return meter.create_histogram(
                name, unit=spec.unit, description=spec.description, explicit_bucket_boundaries_advisory=spec.bounds
            )

        self._latency = histogram(INFERENCE_LATENCY_MS)
        self._entities = histogram(ENTITIES_DETECTED_COUNT)
        self._input_length = histogram(INPUT_LENGTH_CHARS)
        # Counters are kept as plain running totals under a lock (a dict increment, well under a
        # microsecond) and reported to OpenTelemetry as observable counters when the reader collects.
        self._totals: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in COUNTERS}
        self._totals_lock = threading.Lock()
        for name in COUNTERS:
            spec = METRICS[name]
            meter.create_observable_counter(
                name, callbacks=[functools.partial(self._observe, name)], unit=spec.unit, description=spec.description
            )
        # a constant heartbeat (not in the catalogue, never stored): every interval is exported, traffic
        # or not, so the writer's watermark advances while the endpoint is idle
        meter.create_observable_counter(HEARTBEAT, callbacks=[lambda options: [Observation(1)]])
        self._attribute_sets: dict[tuple[str, ...], dict[str, str]] = {}
        self._counted_attributes: dict[tuple[str, ...], dict[str, str]] = {}
        self._failures = 0
        self._shut_down = False

    def _attributes(self, key: tuple[str, ...]) -> dict[str, str]:
        attributes = self._attribute_sets.get(key)
        if attributes is None:
            if len(self._attribute_sets) >= _MAX_CACHED_ATTRIBUTE_SETS:
                self._attribute_sets.clear()
            endpoint, deployment, model_version, traffic_class, label = key
            attributes = {
                "endpoint": endpoint, "deployment": deployment, "model_version": model_version,
                "traffic_class": traffic_class,
            }  # fmt: skip
            if label:
                attributes["label"] = label
            self._attribute_sets[key] = attributes
        return attributes

    def _count(self, key: tuple[str, ...], values: Sequence[tuple[str, float]]) -> None:
        """Add to several running totals of one attribute set under one lock."""
        with self._totals_lock:
            if key not in self._counted_attributes:
                self._counted_attributes[key] = self._attributes(key)
            for name, value in values:
                totals = self._totals[name]
                totals[key] = totals.get(key, 0) + value

    def _observe(self, name: str, options: CallbackOptions) -> list[Observation]:
        with self._totals_lock:
            items = list(self._totals[name].items())
        return [Observation(total, self._counted_attributes[key]) for key, total in items]

    def record_request(self, record: RequestRecord) -> None:
        """Latency and counts of one answered request (system metrics)."""
        try:
            traffic_class = _checked(record.traffic_class)
            key = (record.endpoint or self.endpoint, record.deployment, record.model_version, traffic_class, "")
            latency = max(0.0, float(record.latency_ms))
            self._latency.record(latency, self._attributes(key))
            values = [(REQUEST_COUNT, 1), (INFERENCE_LATENCY_MS + SUMSQ_SUFFIX, latency * latency)]
            values += [(latency_over(edge), 1) for edge in LATENCY_EDGES_MS if latency > edge]
            if 400 <= record.status < 500:
                values.append((CLIENT_ERROR_COUNT, 1))
            elif record.status >= 500:
                values.append((SERVER_ERROR_COUNT, 1))
            self._count(key, values)
        except Exception as exc:  # telemetry must never fail a request
            self._failed(exc, SYSTEM)

    def record_documents(
        self,
        *,
        deployment: str,
        model_version: str,
        documents: Sequence[DocumentSignals],
        traffic_class: str = LIVE,
    ) -> None:
        """Model signals of the documents scored in one request (counts only)."""
        if not documents:
            return
        try:
            key = (self.endpoint, deployment, model_version, _checked(traffic_class), "")
            attributes = self._attributes(key)
            empty, entity_squares, char_squares = 0, 0, 0
            per_label: dict[str, list[int]] = {}
            for document in documents:
                self._entities.record(document.entities, attributes)
                self._input_length.record(document.input_chars, attributes)
                entity_squares += document.entities * document.entities
                char_squares += document.input_chars * document.input_chars
                if document.entities == 0:
                    empty += 1
                for label, count in document.entities_per_label.items():
                    if count:
                        sums = per_label.setdefault(label, [0, 0])
                        sums[0] += count
                        sums[1] += count * count
            self._count(
                key,
                [
                    (DOCUMENT_COUNT, len(documents)),
                    (EMPTY_PREDICTION_COUNT, empty),
                    (ENTITIES_DETECTED_COUNT + SUMSQ_SUFFIX, entity_squares),
                    (INPUT_LENGTH_CHARS + SUMSQ_SUFFIX, char_squares),
                ],
            )
            for label, (total, squares) in per_label.items():
                self._count(
                    key[:4] + (label,), [(ENTITIES_PER_LABEL, total), (ENTITIES_PER_LABEL + SUMSQ_SUFFIX, squares)]
                )
        except Exception as exc:  # telemetry must never fail a request
            self._failed(exc, MODEL)

    def record_agreement(
        self, *, deployment: str, model_version: str, agreements: Sequence[Agreement], traffic_class: str = MIRROR
    ) -> None:
        """Shadow (or probe) agreement of the candidate ``deployment`` with the reference: counts only."""
        if not agreements:
            return
        try:
            key = (self.endpoint, deployment, model_version, _checked(traffic_class), "")
            exact = sum(agreement.exact for agreement in agreements)
            self._count(key, [(AGREEMENT_DOCUMENTS, len(agreements)), (AGREEMENT_EXACT_DOCUMENTS, exact)])
            for agreement in agreements:
                for label, counts in agreement.per_label.items():
                    self._count(
                        key[:4] + (label,),
                        [
                            (AGREEMENT_MATCHED, counts.matched),
                            (AGREEMENT_CANDIDATE_ONLY, counts.candidate_only),
                            (AGREEMENT_REFERENCE_ONLY, counts.reference_only),
                        ],
                    )
        except Exception as exc:  # telemetry must never fail a request
            self._failed(exc, MODEL)

    def record_mirror_dropped(self, *, deployment: str, model_version: str) -> None:
        """A mirror copy that was not sent or not answered (busy, gone, failed): counted, never silent."""
        try:
            self._count((self.endpoint, deployment, model_version, MIRROR, ""), [(MIRROR_DROPPED_COUNT, 1)])
        except Exception as exc:  # telemetry must never fail a request
            self._failed(exc, SYSTEM)

    def _failed(self, exc: Exception, signal: str) -> None:
        self.loss.add("recording_failures", 1, signal)
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
    loss = LossCounter()
    reader = PeriodicExportingMetricReader(
        LocalStoreExporter(store, endpoint=endpoint, loss=loss, export_interval_s=export_interval_s),
        export_interval_millis=export_interval_s * 1000.0,
        export_timeout_millis=max(30_000.0, export_interval_s * 1000.0),
    )
    provider = SdkMeterProvider(
        metric_readers=[reader],
        resource=Resource.create({"service.name": "nerops-endpoint", "nerops.endpoint": endpoint}),
        exemplar_filter=AlwaysOffExemplarFilter(),
    )
    telemetry = Telemetry(provider, endpoint=endpoint, loss=loss)
    telemetry.store_path = Path(store_path)
    return telemetry
