"""The catalogue of instruments: names, kinds (system metric or model signal), units, bucket bounds.

One place names every instrument, so the recorder (:mod:`nerops.telemetry.recorder`), the store's
tables (:mod:`nerops.telemetry.store`), the alert rules and the KQL compiler agree on them.

    system metrics (table ``system_points``)     model signals (table ``model_points``)
    inference_latency_ms   histogram, ms         entities_detected_count  histogram, entities / document
    request_count          counter               entities_per_label       counter, attribute ``label``
    client_error_count     counter, 4xx          empty_prediction_count   counter, documents with 0 entities
    server_error_count     counter, 5xx          document_count           counter
                                                 input_length_chars       histogram, characters

Every point carries ``endpoint``, ``deployment``, ``model_version`` and ``mirrored`` ("true"/"false").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["system", "model"]
SYSTEM: Kind = "system"
MODEL: Kind = "model"
KINDS: tuple[Kind, ...] = (SYSTEM, MODEL)
TABLES: dict[str, str] = {SYSTEM: "system_points", MODEL: "model_points"}

INFERENCE_LATENCY_MS = "inference_latency_ms"
REQUEST_COUNT = "request_count"
CLIENT_ERROR_COUNT = "client_error_count"
SERVER_ERROR_COUNT = "server_error_count"
ENTITIES_DETECTED_COUNT = "entities_detected_count"
ENTITIES_PER_LABEL = "entities_per_label"
EMPTY_PREDICTION_COUNT = "empty_prediction_count"
DOCUMENT_COUNT = "document_count"
INPUT_LENGTH_CHARS = "input_length_chars"

# 1 ms .. 60 s, each bucket at most ~1.5x the previous one: p95 interpolated within a bucket stays close.
LATENCY_BOUNDS_MS: tuple[float, ...] = (
    1, 2, 3, 5, 7.5, 10, 15, 20, 25, 30, 40, 50, 60, 75, 100, 125, 150, 200, 250, 300, 400, 500, 600, 750,
    1000, 1250, 1500, 2000, 2500, 3000, 4000, 5000, 7500, 10000, 15000, 20000, 30000, 45000, 60000,
)  # fmt: skip
# The first bucket is (-inf, 0]: documents without any entity.
ENTITY_BOUNDS: tuple[float, ...] = (0, 1, 2, 3, 5, 7, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 300, 500)
INPUT_LENGTH_BOUNDS: tuple[float, ...] = (
    0, 100, 250, 500, 1000, 1500, 2000, 3000, 4000, 5000, 6000, 8000, 10000, 15000, 20000, 30000, 50000, 100000,
    200000,
)  # fmt: skip


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    instrument: Literal["counter", "histogram"]
    unit: str
    description: str
    bounds: tuple[float, ...] = ()
    labelled: bool = False

    @property
    def is_histogram(self) -> bool:
        return self.instrument == "histogram"


METRICS: dict[str, MetricSpec] = {
    spec.name: spec
    for spec in (
        MetricSpec(
            INFERENCE_LATENCY_MS,
            SYSTEM,
            "histogram",
            "ms",
            "Time from request received to response sent, as the endpoint's front door measured it.",
            LATENCY_BOUNDS_MS,
        ),
        MetricSpec(REQUEST_COUNT, SYSTEM, "counter", "{request}", "Requests answered (any status)."),
        MetricSpec(CLIENT_ERROR_COUNT, SYSTEM, "counter", "{request}", "Requests answered with a 4xx status."),
        MetricSpec(SERVER_ERROR_COUNT, SYSTEM, "counter", "{request}", "Requests answered with a 5xx status."),
        MetricSpec(
            ENTITIES_DETECTED_COUNT, MODEL, "histogram", "{entity}", "Entities found per document.", ENTITY_BOUNDS
        ),
        MetricSpec(
            ENTITIES_PER_LABEL,
            MODEL,
            "counter",
            "{entity}",
            "Entities found, per label (attribute 'label').",
            labelled=True,
        ),
        MetricSpec(EMPTY_PREDICTION_COUNT, MODEL, "counter", "{document}", "Documents with no entity at all."),
        MetricSpec(DOCUMENT_COUNT, MODEL, "counter", "{document}", "Documents scored."),
        MetricSpec(INPUT_LENGTH_CHARS, MODEL, "histogram", "{char}", "Input length per document.", INPUT_LENGTH_BOUNDS),
    )
}

SYSTEM_METRICS: frozenset[str] = frozenset(name for name, spec in METRICS.items() if spec.kind == SYSTEM)
MODEL_METRICS: frozenset[str] = frozenset(name for name, spec in METRICS.items() if spec.kind == MODEL)


def metric_spec(name: str) -> MetricSpec:
    """The spec of a known metric; a clear error listing the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}: known metrics are {', '.join(sorted(METRICS))}") from None


def kind_of(name: str) -> Kind:
    return metric_spec(name).kind


def table_of(kind_or_table: str) -> str:
    """``"system"``/``"system_points"`` -> ``"system_points"`` (same for model); anything else is an error."""
    if kind_or_table in TABLES:
        return TABLES[kind_or_table]
    if kind_or_table in TABLES.values():
        return kind_or_table
    raise ValueError(f"unknown signal kind {kind_or_table!r}: use 'system' or 'model'")
