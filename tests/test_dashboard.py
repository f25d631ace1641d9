"""The dashboard page: its data from the store, marks and weights from the ledger, verdicts from the evidence
lines, and a look in a real browser."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import pytest

from nerops.controller import evidence
from nerops.controller.records import RecordStore, RolloutRecord
from nerops.dashboard import (
    VERDICT_COLORS,
    Mark,
    MarkCluster,
    cluster_marks,
    collect,
    color_of,
    marks_from_ledger,
    render,
    split_gaps,
    verdict_segments,
    weight_series,
)
from nerops.ledger import Ledger
from nerops.reporting import rollout_looks
from nerops.telemetry import Point, TelemetryStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
T0 = time.time() - 1800
S0 = round(T0)  # whole seconds: ledger times keep microseconds, so these come back exactly


class Clock:
    """The ledger's clock, set by the test: entries at chosen times."""

    def __init__(self) -> None:
        self.at = 0.0

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.at, UTC)


def clocked_ledger(path: Path) -> tuple[Ledger, Clock]:
    clock = Clock()
    return Ledger(path, clock=clock), clock


def traffic(ledger: Ledger, clock: Clock, at: float, split: dict, mirror: dict | None = None, endpoint="ep"):
    clock.at = at
    ledger.append(
        "traffic_change",
        subject={"endpoint": endpoint},
        evidence={"after": {"traffic": split, "mirror": mirror or {}}},
    )


def line(at: float, status: str | None, *, step: int, phase="progressing", weight=0, rollout="ep/v2/1", smoke=False):
    """One evidence line as controller.run._commit writes it (``status`` None: a manual verb's line)."""
    out = {"time": at, "rollout": rollout, "owner": "test", "step": step, "phase": phase, "weight": weight}
    out["frozen"] = False
    if status is None:
        return {**out, "command": {"verb": "pause", "actor": "test", "reason": "look"}}
    metrics = [] if smoke else [{"metric": "latency_p95", "status": status}]
    return {**out, "look": {"status": status, "reason": "r", "now": at, "interval": 60.0, "metrics": metrics}}


def fill(store: TelemetryStore) -> None:
    """30 minutes of synthetic telemetry: blue all along, green from minute 10, green slower from minute 20."""
    rng = random.Random(0)
    points = []
    for minute in range(30):
        for second in range(0, 60, 10):
            t = T0 + minute * 60 + second + 10
            for name, version in (("blue", "1"), ("green", "2")):
                if name == "green" and minute < 10:
                    continue
                n = 7 if name == "blue" else 3
                slow = 2.0 if name == "green" and minute >= 20 else 1.0
                latencies = [rng.uniform(30, 60) * slow for _ in range(n)]
                common = {"endpoint": "ep", "deployment": name, "model_version": version, "interval_s": 10}
                points += [
                    Point.histogram(t, "inference_latency_ms", latencies, **common),
                    Point.counter(t, "request_count", n, **common),
                    Point.counter(t, "server_error_count", 1 if name == "green" and minute == 25 else 0, **common),
                    Point.counter(t, "client_error_count", 0, **common),
                    Point.counter(t, "document_count", n, **common),
                    Point.histogram(t, "entities_detected_count", [rng.randint(20, 40) for _ in range(n)], **common),
                    Point.counter(t, "empty_prediction_count", 0, **common),
                ]
    store.write(points)


@pytest.fixture()
def dashboard_inputs(tmp_path: Path):
    store = TelemetryStore(tmp_path / "telemetry.db")
    fill(store)
    ledger = Ledger(tmp_path / "ledger.jsonl", clock=None)
    ledger.append("deployment_created", subject={"deployment": "green", "version": "2"}, evidence={})
    ledger.append(
        "traffic_change", subject={"endpoint": "ep"}, evidence={"after": {"traffic": {"blue": 70, "green": 30}}}
    )
    ledger.append("rollback", subject={"version": "2"}, evidence={"reason": "latency"})
    yield store, ledger
    store.close()


def test_series_per_deployment_match_what_was_written(dashboard_inputs):
    store, _ = dashboard_inputs
    data = collect(store, T0, T0 + 1800, 60)
    assert sum(v for _, v in data["requests"]["blue"]) == 30 * 6 * 7
    assert sum(v for _, v in data["requests"]["green"]) == 20 * 6 * 3
    early = [v for t, v in data["latency_mean"]["green"] if t < T0 + 20 * 60]
    late = [v for t, v in data["latency_mean"]["green"] if t > T0 + 21 * 60]
    assert min(late) > max(early), "the slowdown shows in the series"
    assert max(v for _, v in data["server_error_rate"]["green"]) > 0
    assert all(v == 0 for _, v in data["empty_rate"]["blue"])


def test_ledger_marks_are_on_the_page(dashboard_inputs):
    store, ledger = dashboard_inputs
    marks = marks_from_ledger(ledger.entries(), 0, time.time() + 60)
    assert [m.kind for m in marks] == ["deployment_created", "traffic_change", "rollback"]
    assert marks[1].text == "traffic blue 70 / green 30"
    assert marks_from_ledger(ledger.entries(), 0, time.time() + 60, endpoint="other")[1:] == [marks[2]]
    page = render(store, ledger.entries(), endpoint="ep", start=T0, end=time.time() + 5)
    assert page.count("<svg") == 6  # the traffic weights, three system panels, two model panels
    assert "Traffic weight per deployment" in page  # matplotlib keeps each text in a comment beside its paths
    assert "<h2>Rollout</h2>" in page and "Health verdicts" not in page and "verdicts:" not in page  # no looks
    assert "traffic blue 70 / green 30" in page and "System metrics" in page and "Model signals" in page
    assert "<script" not in page  # self-contained, nothing to fetch or run
    assert "Shadow agreement" not in page  # nothing was compared


def test_shadow_agreement_is_drawn_when_answers_were_compared(dashboard_inputs):
    store, ledger = dashboard_inputs
    common = {"endpoint": "ep", "deployment": "green", "model_version": "2", "traffic_class": "mirror"}
    store.write(
        [Point.counter(T0 + 60 * k, "agreement_documents", 10, **common) for k in range(1, 11)]
        + [Point.counter(T0 + 60 * k, "agreement_exact_documents", 4 if k > 5 else 9, **common) for k in range(1, 11)]
    )
    data = collect(store, T0, T0 + 1800, 60)
    assert [round(v) for _, v in data["exact_agreement"]["green"]] == [90] * 5 + [40] * 5
    page = render(store, ledger.entries(), endpoint="ep", start=T0, end=time.time() + 5)
    assert page.count("<svg") == 7 and "Shadow agreement" in page


def near(rgb, colour: str, tolerance: float = 0.03):
    """Pixels of ``colour`` (``#rrggbb``), as a boolean image."""
    want = [int(colour[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    return (abs(rgb - want) <= tolerance).all(axis=-1)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_screenshot_in_headless_chromium(dashboard_inputs, rollout, tmp_path: Path):
    store, _ = dashboard_inputs
    ledger, looks = rollout
    page = tmp_path / "dashboard.html"
    html = render(store, ledger.entries(), endpoint="ep", start=T0, end=time.time() + 5, looks=looks)
    page.write_text(html, encoding="utf-8")
    shot = tmp_path / "dashboard.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,2500",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2500, 1100)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "the page is not blank"
    coloured = (abs(rgb[..., 0] - rgb[..., 2]) > 0.3).sum()
    assert coloured > 2000, "the plot lines and marks are drawn in colour"
    out = Path(__file__).parent / "screenshots"
    out.mkdir(exist_ok=True)
    shutil.copy(shot, out / "dashboard.png")  # kept for a person to look at (not committed)
    # the verdict band: healthy from the smoke look to minute 20, then one unhealthy interval (a swatch is 144 px)
    healthy = near(rgb, VERDICT_COLORS["healthy"])
    assert healthy.sum() > 3000, "the healthy looks are drawn as a band"
    assert near(rgb, VERDICT_COLORS["unhealthy"]).sum() > 400, "the unhealthy look is in the band"
    assert near(rgb, VERDICT_COLORS["smoke healthy"]).sum() > 400, "the readiness smoke verdict is in the band"
    # above the band, the traffic weights: the candidate's step line holds at three levels (0, 10 and 50 %)
    band_top = int(healthy.sum(axis=1).nonzero()[0].min())
    runs = near(rgb[:band_top], color_of("green"), 0.06).sum(axis=1) > 40  # rows with a horizontal stretch
    levels = sum(1 for row in range(1, band_top) if runs[row] and not runs[row - 1])
    assert levels >= 3, f"the candidate's weight steps through 0, 10 and 50 % ({levels} levels seen)"


@pytest.mark.parametrize(
    ("points", "runs"),
    [
        ([], []),
        ([(0, 1)], [[(0, 1)]]),
        ([(0, 1), (10, 2), (20, 3)], [[(0, 1), (10, 2), (20, 3)]]),  # every step: one line
        ([(0, 1), (15, 2)], [[(0, 1), (15, 2)]]),  # 1.5 steps apart: still joined
        ([(0, 1), (16, 2)], [[(0, 1)], [(16, 2)]]),  # more than 1.5 steps: a gap
        ([(0, 1), (10, 2), (40, 3), (50, 4), (90, 5)], [[(0, 1), (10, 2)], [(40, 3), (50, 4)], [(90, 5)]]),
    ],
)
def test_a_series_is_cut_where_points_are_more_than_one_and_a_half_steps_apart(points, runs):
    assert split_gaps(points, 10) == runs


TRAFFIC = Mark(0, "traffic_change", "traffic blue 90 / green 10")
ROLLBACK = Mark(5, "rollback", "rollback v2")
FINISHED = Mark(9, "rollout_finished", "rollout v2 rolled_back")


@pytest.mark.parametrize(
    ("marks", "clusters"),
    [
        ([], []),
        ([TRAFFIC], [MarkCluster(0, "traffic_change", "traffic blue 90 / green 10", (TRAFFIC,))]),
        (  # apart by the width or more: each its own line
            [TRAFFIC, Mark(10, "rollback", "rollback v2")],
            [
                MarkCluster(0, "traffic_change", "traffic blue 90 / green 10", (TRAFFIC,)),
                MarkCluster(10, "rollback", "rollback v2", (Mark(10, "rollback", "rollback v2"),)),
            ],
        ),
        (  # close together, given in any order: one line at the first, labelled by the weightiest kind
            [FINISHED, TRAFFIC, ROLLBACK],
            [MarkCluster(0, "rollback", "rollback v2 +2 more", (TRAFFIC, ROLLBACK, FINISHED))],
        ),
        (  # a cluster is at most the width wide: a chain of close marks starts a new one
            [TRAFFIC, Mark(6, "traffic_change", "b"), Mark(12, "traffic_change", "c")],
            [
                MarkCluster(0, "traffic_change", "traffic blue 90 / green 10 +1 more",
                            (TRAFFIC, Mark(6, "traffic_change", "b"))),
                MarkCluster(12, "traffic_change", "c", (Mark(12, "traffic_change", "c"),)),
            ],
        ),
    ],
)  # fmt: skip
def test_close_marks_are_drawn_as_one_labelled_cluster(marks, clusters):
    assert cluster_marks(marks, within=10) == clusters


def test_rollout_kinds_are_marks_with_their_own_colours(tmp_path: Path):
    ledger, clock = clocked_ledger(tmp_path / "ledger.jsonl")
    rollout = {"model": "m", "version": "2", "endpoint": "ep", "rollout": "ep/v2/1"}
    for at, kind, said in [
        (S0 + 1, "rollout_started", {"owner": "test"}),
        (S0 + 2, "rollout_decision", {"decision": "step", "summary": "step 1 canary 10%: readiness passed"}),
        (S0 + 3, "rollout_finished", {"phase": "rolled_back"}),
    ]:
        clock.at = at
        ledger.append(kind, subject=rollout, evidence=said)
    marks = marks_from_ledger(ledger.entries(), S0, S0 + 10, endpoint="ep")
    assert [(m.kind, m.text) for m in marks] == [
        ("rollout_started", "rollout v2 started"),
        ("rollout_decision", "step 1 canary 10%: readiness passed"),
        ("rollout_finished", "rollout v2 rolled_back"),
    ]
    assert marks_from_ledger(ledger.entries(), S0, S0 + 10, endpoint="other") == []


def test_traffic_weights_are_the_ledgers_steps(tmp_path: Path):
    ledger, clock = clocked_ledger(tmp_path / "ledger.jsonl")
    start, end = S0, S0 + 1000
    traffic(ledger, clock, start - 200, {"blue": 100})
    traffic(ledger, clock, start - 100, {"blue": 100, "green": 0})  # the split at the window's start
    traffic(ledger, clock, start + 100, {"blue": 90, "green": 10})
    traffic(ledger, clock, start + 150, {"red": 100}, endpoint="other")  # another endpoint's
    traffic(ledger, clock, start + 200, {"blue": 50, "green": 50})
    traffic(ledger, clock, start + 250, {"blue": 50, "green": 50}, {"green": 20})  # only the mirror changes
    traffic(ledger, clock, start + 300, {"blue": 100, "green": 0})
    clock.at = start + 400
    ledger.append("deployment_deleted", subject={"endpoint": "ep", "deployment": "green"}, evidence={})
    traffic(ledger, clock, end + 100, {"blue": 0})  # after the window
    weights = weight_series(ledger.entries(), start, end, endpoint="ep")
    assert weights["traffic"] == {
        "blue": [(start, 100), (start + 100, 90), (start + 200, 50), (start + 300, 100), (end, 100)],
        "green": [(start, 0), (start + 100, 10), (start + 200, 50), (start + 300, 0), (start + 400, None)],
    }
    assert weights["mirror"] == {"green": [(start + 250, 20), (start + 300, 0), (start + 400, None)]}


def test_verdict_timeline_segments_come_from_the_evidence_lines():
    looks = [
        line(1000, "healthy", step=1, weight=10, smoke=True),  # judged at readiness: the smoke requests
        line(1060, "inconclusive", step=1, weight=10),
        line(1120, "healthy", step=2, weight=50),
        line(1180, "healthy", step=2, weight=50),  # the same verdict again: one segment
        line(1200, None, step=2, phase="paused", weight=50),  # a manual verb: bounds the next look
        line(1400, "healthy", step=2, weight=50),  # after a gap in the looks: one interval only
        line(1460, "unhealthy", step=0, phase="rolled_back"),
        line(2000, "unhealthy", step=0, phase="rolled_back", rollout="ep/v3/1", smoke=True),
        line(940, "healthy", step=0, rollout="ep/v9/1", smoke=True),  # before the window
    ]
    segments = verdict_segments(reversed(looks), start=950, end=1990)
    assert list(segments) == ["ep/v2/1", "ep/v3/1"]
    assert segments["ep/v2/1"] == [
        (950, 1000, "smoke healthy"),
        (1000, 1060, "inconclusive"),
        (1060, 1180, "healthy"),
        (1340, 1400, "healthy"),
        (1400, 1460, "unhealthy"),
    ]
    assert segments["ep/v3/1"] == [(1940, 1990, "smoke unhealthy")]


def test_verdict_timeline_is_on_the_page(dashboard_inputs):
    store, ledger = dashboard_inputs
    looks = [line(T0 + 600, "healthy", step=1, smoke=True), line(T0 + 660, "unhealthy", step=0, phase="rolled_back")]
    page = render(store, ledger.entries(), endpoint="ep", start=T0, end=time.time() + 5, looks=looks)
    assert page.count("<svg") == 7 and "Health verdicts per rollout" in page
    assert "<td>ep/v2/1</td>" in page and "healthy 1, unhealthy 1" in page
    legend = page[page.index("<div class='legend'>") :].split("</div>")[0]
    assert "smoke healthy" in legend and "unhealthy" in legend and "inconclusive" not in legend
    assert VERDICT_COLORS["unhealthy"] in legend
    assert page.index("<h2>Rollout</h2>") < page.index("Health verdicts") < page.index("<h2>System metrics</h2>")


def test_the_looks_are_read_from_the_rollouts_evidence_files(tmp_path: Path):
    store = RecordStore(tmp_path / "rollouts")
    assert rollout_looks(store.root, "ep", since=0) == [] and not store.root.exists()  # nothing made

    def saved(version: str, phase: str, updated: float, looks: list[dict]) -> None:
        record = RolloutRecord("ep", "m", version, 1, f"v{version}-1", "blue", "1", "default", "", "test", 0.0)
        store.write(replace(record, state={"phase": phase}, updated=updated))
        for look in looks:
            evidence.append(store.evidence_path(record), look)

    old = [line(100, "unhealthy", step=0, phase="rolled_back", rollout="ep/v2/1")]
    saved("2", "rolled_back", 100, old)  # ended before the window
    saved("3", "promoted", 5000, [line(4900, "healthy", step=3, rollout="ep/v3/1")])
    saved("4", "progressing", 200, [line(200, "healthy", step=1, rollout="ep/v4/1", smoke=True)])  # still running
    looks = rollout_looks(store.root, "ep", since=1000)
    assert sorted(x["rollout"] for x in looks) == ["ep/v3/1", "ep/v4/1"]
    assert looks[0]["look"]["status"] == "healthy" and rollout_looks(store.root, "other", since=0) == []


@pytest.fixture()
def rollout(tmp_path: Path):
    """Rollout ep/v2/1 of green: readiness, 10 %, 50 %, then unhealthy (green slows at minute 20), rolled back."""
    ledger, clock = clocked_ledger(tmp_path / "rollout-ledger.jsonl")
    subject = {"model": "m", "version": "2", "endpoint": "ep", "rollout": "ep/v2/1"}

    def note(at: float, kind: str, evidence: dict, about: dict = subject) -> None:
        clock.at = at
        ledger.append(kind, subject=about, evidence=evidence)

    note(S0 + 590, "deployment_created", {}, {"endpoint": "ep", "deployment": "green", "version": "2"})
    note(S0 + 595, "rollout_started", {"owner": "test"})
    traffic(ledger, clock, S0 + 600, {"blue": 100, "green": 0})
    looks = [line(S0 + 630, "healthy", step=1, weight=10, smoke=True)]
    traffic(ledger, clock, S0 + 631, {"blue": 90, "green": 10})
    note(S0 + 632, "rollout_decision", {"decision": "step", "summary": "step 1 canary 10%: smoke passed"})
    looks += [line(S0 + t, "healthy", step=1, weight=10) for t in range(690, 1080, 60)]
    looks.append(line(S0 + 1080, "healthy", step=2, weight=50))
    traffic(ledger, clock, S0 + 1081, {"blue": 50, "green": 50})
    note(S0 + 1082, "rollout_decision", {"decision": "step", "summary": "step 2 canary 50%: healthy"})
    looks += [line(S0 + t, "healthy", step=2, weight=50) for t in (1140, 1200)]
    looks.append(line(S0 + 1260, "unhealthy", step=2, phase="rolled_back"))
    traffic(ledger, clock, S0 + 1261, {"blue": 100, "green": 0})
    note(S0 + 1262, "rollout_decision", {"decision": "rolled_back", "summary": "rolled_back: latency worse"})
    note(S0 + 1263, "rollback", {"reason": "latency"})
    note(S0 + 1264, "rollout_finished", {"phase": "rolled_back"})
    return ledger, looks
