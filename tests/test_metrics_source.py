"""The metrics-source port's contract: every backend must pass these (the Azure adapter adds itself to BACKENDS).

Telemetry is written through the real OpenTelemetry path (``Telemetry`` on an SDK meter provider and
the backend's exporter), then read back with ``series``. Expected values are computed by hand from
the few measurements below, not by the code under test.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nerops.telemetry import DocumentSignals, RequestRecord, Telemetry, TelemetryStore, local_telemetry
from nerops.telemetry import metrics as m
from nerops.telemetry.agreement import compare
from nerops.telemetry.source import Arm, MetricsSource, judgeable_now

ENDPOINT = "resume-ner"
ALL_METRICS = [
    m.REQUEST_COUNT,
    m.SERVER_ERROR_COUNT,
    m.INFERENCE_LATENCY_MS,
    m.MIRROR_DROPPED_COUNT,
    m.DOCUMENT_COUNT,
    m.EMPTY_PREDICTION_COUNT,
    m.ENTITIES_DETECTED_COUNT,
    m.ENTITIES_PER_LABEL,
    m.AGREEMENT_DOCUMENTS,
    m.AGREEMENT_EXACT_DOCUMENTS,
    m.AGREEMENT_MATCHED,
    m.AGREEMENT_CANDIDATE_ONLY,
    m.AGREEMENT_REFERENCE_ONLY,
]


@dataclass
class Backend:
    """A backend under contract: ``telemetry()`` records into it for real, ``source()`` reads it."""

    name: str
    telemetry: Callable[[], Telemetry]
    source: Callable[[], MetricsSource]


def local_backend(tmp_path: Path) -> Backend:
    path = tmp_path / "telemetry.db"
    return Backend("local", lambda: local_telemetry(path, endpoint=ENDPOINT, export_interval_s=3600),
                   lambda: TelemetryStore(path, readonly=True))  # fmt: skip


BACKENDS = {"local": local_backend}


def doc(**per_label: int) -> DocumentSignals:
    labels = {label.replace("_", " "): n for label, n in per_label.items()}
    return DocumentSignals(input_chars=100, entities=sum(labels.values()), entities_per_label=labels)


def entity(label: str, start: int, end: int) -> dict[str, object]:
    return {"label": label, "start": start, "end": end, "text": "never recorded"}


@dataclass(frozen=True)
class Recorded:
    source: MetricsSource
    start: float
    step: float

    @property
    def end(self) -> float:
        return self.start + 2 * self.step


def _phase_one(telemetry: Telemetry) -> None:
    for status, latency in ((200, 10.0), (500, 20.0), (200, 30.0)):  # blue: count 3, sum 60, sumsq 1400
        telemetry.record_request(RequestRecord(ENDPOINT, "blue", "3", status, latency))
    telemetry.record_request(RequestRecord(ENDPOINT, "green", "4", 200, 40.0))  # green: 1, 40, 1600
    # blue documents: entities 2, 0, 5 -> count 3, sum 7, sumsq 29; Skills 1 + 4 (sumsq 17), Name 1 + 1 (sumsq 2)
    telemetry.record_documents(
        deployment="blue", model_version="3", documents=[doc(Name=1, Skills=1), doc(), doc(Name=1, Skills=4)]
    )
    telemetry.record_documents(deployment="green", model_version="4", documents=[doc(Skills=3)])
    # traffic that live reads must not see
    telemetry.record_request(RequestRecord(ENDPOINT, "green", "4", 200, 900.0, "mirror"))
    telemetry.record_request(RequestRecord(ENDPOINT, "blue", "3", 200, 700.0, "probe"))
    telemetry.record_request(RequestRecord(ENDPOINT, "blue", "3", 200, 800.0, "smoke"))
    pair = compare(
        [entity("Name", 0, 8), entity("Skills", 20, 26), entity("Skills", 30, 34)],  # the mirror's answer
        [entity("Name", 0, 8), entity("Skills", 20, 26), entity("Email Address", 40, 52)],  # the live answer
    )
    telemetry.record_agreement(deployment="green", model_version="4", agreements=[pair])
    telemetry.record_mirror_dropped(deployment="green", model_version="4")


def _phase_two(telemetry: Telemetry) -> None:
    for latency in (5.0, 15.0):  # blue: count 2, sum 20, sumsq 250
        telemetry.record_request(RequestRecord(ENDPOINT, "blue", "3", 200, latency))
    telemetry.record_request(RequestRecord(ENDPOINT, "green", "4", 503, 60.0))  # green: 1 error, 60, 3600
    telemetry.record_documents(deployment="green", model_version="4", documents=[doc(Skills=2, Name=1), doc()])


@pytest.fixture(params=sorted(BACKENDS))
def recorded(request, tmp_path: Path) -> Iterator[Recorded]:
    """Two intervals of telemetry on two arms, exported through OpenTelemetry into the backend."""
    backend = BACKENDS[request.param](tmp_path)
    telemetry = backend.telemetry()
    start = time.time()
    _phase_one(telemetry)
    telemetry.flush()
    time.sleep(0.3)
    middle = time.time()  # after the first export, before the second collection
    _phase_two(telemetry)
    telemetry.flush()
    step = middle - start
    while time.time() <= start + 2 * step:
        time.sleep(0.02)
    telemetry.shutdown()  # closes the writer: its watermark no longer holds reads back
    source = backend.source()
    yield Recorded(source, start, step)
    getattr(source, "close", lambda: None)()


def test_two_arms_over_two_intervals_match_hand_computed_counts_sums_and_squares(recorded: Recorded):
    blue, green = Arm("blue"), Arm("green")
    series = recorded.source.series(
        ENDPOINT, [blue, green], ALL_METRICS, recorded.start, recorded.end, recorded.step, "live"
    )
    assert isinstance(recorded.source, MetricsSource)  # the protocol's methods are all there
    assert series.problem() is None, series.problem()
    assert len(series.coverage) == 2 and series.traffic_classes == ("live",)
    (first, _), (second, _) = series.intervals()
    b1, g1, b2, g2 = series.at(blue, first), series.at(green, first), series.at(blue, second), series.at(green, second)

    assert (b1.requests, b1.server_errors) == (3, 1)
    assert (b1.latency.count, b1.latency.sum, b1.latency.sumsq) == (3, 60, 1400)
    assert (b1.latency.min, b1.latency.max) == (10, 30)
    assert b1.latency.variance == pytest.approx(100.0)  # 10, 20, 30
    assert {bound: n for bound, n in b1.latency.buckets if n} == {10.0: 1, 20.0: 1, 30.0: 1}
    assert (g1.latency.count, g1.latency.sum, g1.latency.sumsq) == (1, 40, 1600)
    assert (b2.latency.count, b2.latency.sum, b2.latency.sumsq) == (2, 20, 250)
    assert (g2.requests, g2.server_errors, g2.latency.sumsq) == (1, 1, 3600)

    assert (b1.documents, b1.empty_predictions) == (3, 1)
    assert (b1.entities.count, b1.entities.sum, b1.entities.sumsq) == (3, 7, 29)
    skills, name = b1.entities_of("Skills"), b1.entities_of("Name")
    assert (skills.count, skills.sum, skills.sumsq) == (3, 5, 17)
    assert (name.sum, name.sumsq) == (2, 2)
    assert skills.variance == pytest.approx((17 - 25 / 3) / 2)  # per-document spread, not Poisson
    assert (g2.documents, g2.empty_predictions, g2.entities.sum, g2.entities.sumsq) == (2, 1, 3, 9)
    assert (g2.entities_of("Skills").sumsq, g2.entities_of("Name").sum) == (4, 1)
    assert b2.documents == 0 and b2.entities.count == 0  # nothing scored: empty, not absent from the answer

    assert series.query  # the query text, as evidence
    assert series.watermark is not None and series.watermark >= recorded.end


def test_traffic_classes_are_read_apart(recorded: Recorded):
    green, blue = Arm("green"), Arm("blue")

    def one(traffic_class, arm) -> object:
        series = recorded.source.series(
            ENDPOINT, [arm], ALL_METRICS, recorded.start, recorded.end, recorded.end - recorded.start, traffic_class
        )
        return series.at(arm, recorded.start)

    mirror = one("mirror", green)
    assert (mirror.requests, mirror.latency.sum, mirror.latency.sumsq) == (1, 900, 810_000)
    assert mirror.mirror_dropped == 1
    assert mirror.total(m.AGREEMENT_DOCUMENTS) == 1 and mirror.total(m.AGREEMENT_EXACT_DOCUMENTS) == 0
    assert mirror.agreement("Name") == (1, 0, 0)
    assert mirror.agreement("Skills") == (1, 1, 0)
    assert mirror.agreement("Email Address") == (0, 0, 1)
    assert one("probe", blue).latency.sum == 700 and one("smoke", blue).latency.sum == 800
    both = one(["probe", "smoke"], blue)
    assert (both.requests, both.latency.sumsq) == (2, 700**2 + 800**2)
    live = one("live", blue)
    assert (live.requests, live.latency.sum) == (5, 80)  # no probe, smoke or mirror in it
    with pytest.raises(ValueError, match="traffic classes"):
        one("shadow", blue)


def test_arms_are_deployment_and_model_version(recorded: Recorded):
    source, start, end = recorded.source, recorded.start, recorded.end
    found = source.series(ENDPOINT, None, [m.REQUEST_COUNT], start, end, end - start)
    assert found.arms() == [Arm("blue", "3"), Arm("green", "4")]
    assert found.at(Arm("blue", "3"), start).requests == 5
    versioned = source.series(
        ENDPOINT, [Arm("blue", "3"), Arm("blue", "9")], [m.REQUEST_COUNT], start, end, end - start
    )
    assert versioned.at(Arm("blue", "3"), start).requests == 5
    assert versioned.at(Arm("blue", "9"), start).requests == 0
    whole = source.series(ENDPOINT, [Arm(None)], [m.REQUEST_COUNT, m.INFERENCE_LATENCY_MS], start, end, end - start)
    assert whole.at(Arm(None), start).requests == 7
    assert whole.at(Arm(None), start).latency.sumsq == 1400 + 1600 + 250 + 3600


def test_an_endpoint_no_writer_ever_reported_is_an_error_not_no_data(recorded: Recorded):
    series = recorded.source.series("other-endpoint", [Arm("blue")], [m.REQUEST_COUNT], recorded.start, recorded.end, 1)
    assert series.watermark is None and recorded.source.watermark("other-endpoint") is None
    assert "no telemetry watermark" in series.problem()
    assert recorded.source.watermark(ENDPOINT) == math.inf  # the writer closed: everything it had is stored
    assert judgeable_now(recorded.source, ENDPOINT, 5.0) == 5.0
