"""The catalogue of instruments: names, kinds (system metric, model signal, controller), units, bucket bounds.

One place names every instrument, so the recorder (:mod:`nerops.telemetry.recorder`), the store's
tables (:mod:`nerops.telemetry.store`), the alert rules and the KQL compiler agree on them.

    system metrics (table ``system_points``)     model signals (table ``model_points``)
    inference_latency_ms   histogram, ms         entities_detected_count  histogram, entities / document
    request_count          counter               entities_per_label       counter, attribute ``label``
    client_error_count     counter, 4xx          empty_prediction_count   counter, documents with 0 entities
    server_error_count     counter, 5xx          document_count           counter
    mirror_dropped_count   counter, mirror       input_length_chars       histogram, characters
                           copies not answered   agreement_*              shadow / probe agreement, below
    latency_over_<E>ms     counter, requests slower than E ms (E in LATENCY_EDGES_MS): Azure's p95 substitute

Dispersion: every histogram ``h`` and ``entities_per_label`` has a companion counter ``h_sumsq`` (the
sum of squares of its measurements; per label: of each document's count of that label), so mean
tests can use the sample variance. Application Insights keeps no buckets and no squares: the
companions and the latency edges are plain counters that KQL reads from ``AppMetrics``.

Shadow agreement (a mirrored or probe pair, recorded on the candidate's arm, counts only):
``agreement_documents`` / ``agreement_exact_documents`` (documents compared / with identical entities),
and per ``label``: ``agreement_matched`` (same label, start, end in both answers),
``agreement_candidate_only``, ``agreement_reference_only``.

Every point carries ``endpoint``, ``deployment``, ``model_version`` and ``traffic_class``
(:data:`TRAFFIC_CLASSES`: ``live`` routed by the traffic weights, ``mirror`` shadow copies whose answer
is discarded, ``probe`` synthetic requests sent on purpose, ``smoke`` readiness checks).

The controller's own metrics (kind ``controller``, table ``controller_points``; never recorded by the
endpoint, never read by the metrics-source port): gauges written by the rollout controller at every
committed step (:mod:`nerops.controller.telemetry`), one row per rollout and step, with ``rollout``,
``phase`` and the rollout's look interval beside the endpoint, candidate deployment and model version
(:mod:`nerops.telemetry.rollout_points`)::

    rollout_weight_percent   gauge, %     the candidate's live traffic weight after the step
    rollout_last_look_time   gauge, s     when the step was taken (epoch seconds): its age is what
                                          the ``rollout_stuck`` rule measures, in look intervals
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["system", "model", "controller"]
SYSTEM: Kind = "system"
MODEL: Kind = "model"
CONTROLLER: Kind = "controller"
KINDS: tuple[Kind, ...] = (SYSTEM, MODEL)  # the signals: what the endpoint records and the metrics-source port reads
TABLES: dict[str, str] = {SYSTEM: "system_points", MODEL: "model_points", CONTROLLER: "controller_points"}

INFERENCE_LATENCY_MS = "inference_latency_ms"
REQUEST_COUNT = "request_count"
CLIENT_ERROR_COUNT = "client_error_count"
SERVER_ERROR_COUNT = "server_error_count"
ENTITIES_DETECTED_COUNT = "entities_detected_count"
ENTITIES_PER_LABEL = "entities_per_label"
EMPTY_PREDICTION_COUNT = "empty_prediction_count"
DOCUMENT_COUNT = "document_count"
INPUT_LENGTH_CHARS = "input_length_chars"
MIRROR_DROPPED_COUNT = "mirror_dropped_count"
AGREEMENT_DOCUMENTS = "agreement_documents"
AGREEMENT_EXACT_DOCUMENTS = "agreement_exact_documents"
AGREEMENT_MATCHED = "agreement_matched"
AGREEMENT_CANDIDATE_ONLY = "agreement_candidate_only"
AGREEMENT_REFERENCE_ONLY = "agreement_reference_only"
SUMSQ_SUFFIX = "_sumsq"
ROLLOUT_WEIGHT_PERCENT = "rollout_weight_percent"
ROLLOUT_LAST_LOOK_TIME = "rollout_last_look_time"

TrafficClass = Literal["live", "mirror", "probe", "smoke"]
TRAFFIC_CLASSES: tuple[TrafficClass, ...] = ("live", "mirror", "probe", "smoke")
LIVE: TrafficClass = "live"
MIRROR: TrafficClass = "mirror"
# Requests slower than each edge are counted: KQL can read these where AppMetrics has no buckets.
LATENCY_EDGES_MS: tuple[int, ...] = (100, 250, 500, 1000, 2500)


def latency_over(edge_ms: int) -> str:
    return f"latency_over_{edge_ms}ms"


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
    instrument: Literal["counter", "histogram", "gauge"]
    unit: str
    description: str
    bounds: tuple[float, ...] = ()
    labelled: bool = False
    squares_of: str | None = None  # this counter is the sum of squares of that metric's measurements

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
        MetricSpec(MIRROR_DROPPED_COUNT, SYSTEM, "counter", "{request}", "Mirror copies not sent or not answered."),
        *(
            MetricSpec(latency_over(edge), SYSTEM, "counter", "{request}", f"Requests slower than {edge} ms.")
            for edge in LATENCY_EDGES_MS
        ),
        MetricSpec(AGREEMENT_DOCUMENTS, MODEL, "counter", "{document}", "Documents compared (mirror, probe)."),
        MetricSpec(
            AGREEMENT_EXACT_DOCUMENTS, MODEL, "counter", "{document}", "Compared documents with identical entities."
        ),
        MetricSpec(
            AGREEMENT_MATCHED,
            MODEL,
            "counter",
            "{entity}",
            "Entities in both answers (label, start, end).",
            labelled=True,
        ),
        MetricSpec(
            AGREEMENT_CANDIDATE_ONLY, MODEL, "counter", "{entity}", "Entities only the candidate found.", labelled=True
        ),
        MetricSpec(
            AGREEMENT_REFERENCE_ONLY, MODEL, "counter", "{entity}", "Entities only the reference found.", labelled=True
        ),
        MetricSpec(
            ROLLOUT_WEIGHT_PERCENT, CONTROLLER, "gauge", "%", "The rollout's candidate weight after a committed step."
        ),
        MetricSpec(
            ROLLOUT_LAST_LOOK_TIME, CONTROLLER, "gauge", "s", "When the rollout's last step was taken (epoch seconds)."
        ),
    )
}
# the sums of squares: one companion counter per histogram, and one for entities per label per document
for _parent in [spec for spec in METRICS.values() if spec.is_histogram] + [METRICS[ENTITIES_PER_LABEL]]:
    _name = _parent.name + SUMSQ_SUFFIX
    METRICS[_name] = MetricSpec(
        _name,
        _parent.kind,
        "counter",
        f"({_parent.unit})^2",
        f"Sum of squares of {_parent.name}" + (" per document" if _parent.labelled else "") + ".",
        labelled=_parent.labelled,
        squares_of=_parent.name,
    )
SQUARES: dict[str, str] = {spec.squares_of: name for name, spec in METRICS.items() if spec.squares_of}

SYSTEM_METRICS: frozenset[str] = frozenset(name for name, spec in METRICS.items() if spec.kind == SYSTEM)
MODEL_METRICS: frozenset[str] = frozenset(name for name, spec in METRICS.items() if spec.kind == MODEL)
CONTROLLER_METRICS: frozenset[str] = frozenset(name for name, spec in METRICS.items() if spec.kind == CONTROLLER)


def metric_spec(name: str) -> MetricSpec:
    """The spec of a known metric; a clear error listing the known ones otherwise."""
    try:
        return METRICS[name]
    except KeyError:
        raise ValueError(f"unknown metric {name!r}: known metrics are {', '.join(sorted(METRICS))}") from None


def kind_of(name: str) -> Kind:
    return metric_spec(name).kind


def table_of(kind_or_table: str) -> str:
    """``"system"``/``"system_points"`` -> ``"system_points"`` (same for model, controller); else an error."""
    if kind_or_table in TABLES:
        return TABLES[kind_or_table]
    if kind_or_table in TABLES.values():
        return kind_or_table
    raise ValueError(f"unknown signal kind {kind_or_table!r}: use 'system', 'model' or 'controller'")
