"""The dashboard page: its data from the store, marks from the ledger, and a look in a real browser."""

from __future__ import annotations

import random
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from nerops.dashboard import collect, marks_from_ledger, render
from nerops.ledger import Ledger
from nerops.telemetry import Point, TelemetryStore

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
T0 = time.time() - 1800


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
    page = render(store, ledger.entries(), endpoint="ep", start=T0, end=time.time() + 5)
    assert page.count("<svg") == 5
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
    assert page.count("<svg") == 6 and "Shadow agreement" in page


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)")
def test_screenshot_in_headless_chromium(dashboard_inputs, tmp_path: Path):
    store, ledger = dashboard_inputs
    page = tmp_path / "dashboard.html"
    page.write_text(render(store, ledger.entries(), endpoint="ep", start=T0, end=time.time() + 5), encoding="utf-8")
    shot = tmp_path / "dashboard.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         f"--user-data-dir={tmp_path / 'profile'}", "--hide-scrollbars", "--window-size=1100,1900",
         f"--screenshot={shot}", page.as_uri()],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (1900, 1100)
    rgb = pixels[..., :3]
    assert rgb.std() > 0.05, "the page is not blank"
    coloured = (abs(rgb[..., 0] - rgb[..., 2]) > 0.3).sum()
    assert coloured > 2000, "the plot lines and marks are drawn in colour"
    out = Path(__file__).parent / "screenshots"
    out.mkdir(exist_ok=True)
    shutil.copy(shot, out / "dashboard.png")  # kept for a person to look at (not committed)
