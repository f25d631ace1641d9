"""Loss is evidence: a store that refuses writes, a writer that dies, rows that come late.

The store refuses for real: another connection holds SQLite's write lock (``BEGIN EXCLUSIVE``) while the
exporter's busy timeout is short. Telemetry goes through the real OpenTelemetry path.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

from nerops.telemetry import Point, RequestRecord, Telemetry, TelemetryStore
from nerops.telemetry.alerts import Rule, evaluate
from nerops.telemetry.exporter import LocalStoreExporter
from nerops.telemetry.loss import HOST, LossCounter, read_sidecars
from nerops.telemetry.source import Arm, Watermark, judgeable_now

EP = "ep"
ERROR_RATE = Rule.model_validate(
    {
        "name": "error-rate",
        "description": "server errors",
        "signal": "system",
        "aggregation": "rate",
        "numerator": "server_error_count",
        "denominator": "request_count",
        "window": "1h",
        "min_samples": 1,
        "condition": {"op": ">", "threshold": 50},
    }
)


def pipeline(path: Path, *, max_pending: int = 100_000) -> tuple[Telemetry, LocalStoreExporter]:
    store = TelemetryStore(path, busy_timeout_s=0.05)
    loss = LossCounter()
    exporter = LocalStoreExporter(store, endpoint=EP, loss=loss, max_pending=max_pending, apply_retention=False)
    reader = PeriodicExportingMetricReader(exporter, export_interval_millis=3_600_000)
    return Telemetry(MeterProvider(metric_readers=[reader]), endpoint=EP, loss=loss), exporter


def requests(telemetry: Telemetry, n: int) -> None:
    for _ in range(n):
        telemetry.record_request(RequestRecord(EP, "blue", "1", 200, 10.0))


def counted(path: Path, start: float, end: float):
    with TelemetryStore(path, readonly=True) as store:
        return store.series(EP, [Arm("blue")], ["request_count"], start, end, end - start)


def test_a_store_that_refuses_writes_for_a_while(tmp_path: Path):
    path = tmp_path / "telemetry.db"
    telemetry, exporter = pipeline(path)
    t0 = time.time()
    requests(telemetry, 5)
    telemetry.flush()
    before_outage = exporter.exported_to  # the watermark: everything recorded before it is stored
    ok = counted(path, t0 - 1, before_outage)
    assert ok.problem() is None and ok.at(Arm("blue"), t0 - 1).requests == 5

    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")  # the store now refuses every write
    requests(telemetry, 7)
    telemetry.record_request(RequestRecord(EP, "blue", "1", 200, "not a number"))  # type: ignore[arg-type]
    telemetry.flush()
    during = time.time()
    assert exporter.failed_exports == 1
    [(mark, pending)] = read_sidecars(path)  # readers can see the loss although the store cannot keep it yet
    assert mark.writer == exporter.writer and {x.kind for x in pending} == {"export_failures", "recording_failures"}
    outage = counted(path, before_outage, during)
    assert "watermark" in outage.problem() and "behind" in outage.problem()
    with TelemetryStore(path, readonly=True) as reader:
        assert judgeable_now(reader, EP, during) == before_outage  # judge no later than what is complete
    [result] = evaluate([ERROR_RATE], TelemetryStore(path, readonly=True), now=during, endpoint=EP)
    assert result.state == "error" and "telemetry incomplete" in result.message  # never no_data, never ok

    blocker.execute("ROLLBACK")
    blocker.close()
    requests(telemetry, 3)
    telemetry.flush()
    after = exporter.exported_to
    assert read_sidecars(path) == []  # the loss is in the store now
    everything = counted(path, t0 - 1, after)
    assert everything.at(Arm("blue"), t0 - 1).requests == 5 + 7 + 3  # nothing silently dropped
    kinds = {loss.kind: loss.count for loss in everything.loss}
    assert kinds == {"export_failures": 1, "recording_failures": 1}
    assert "export_failures" in counted(path, before_outage, after).problem()  # the outage stays an error
    assert counted(path, t0 - 1, before_outage).problem() is None  # the windows before it do not
    telemetry.shutdown()


def test_a_writer_that_starts_while_the_store_refuses_is_seen_through_its_sidecar(tmp_path: Path):
    path = tmp_path / "telemetry.db"
    TelemetryStore(path).close()  # the store exists; then another process holds its write lock
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    telemetry, exporter = pipeline(path)
    [(mark, _)] = read_sidecars(path)
    assert mark.writer == exporter.writer and not mark.closed
    with TelemetryStore(path, readonly=True) as reader:  # readers still read (WAL), and see the writer
        assert "behind" in reader.series(EP, None, ["request_count"], mark.started, mark.started + 60, 60).problem()
    blocker.execute("ROLLBACK")
    blocker.close()
    requests(telemetry, 2)
    telemetry.flush()
    assert read_sidecars(path) == []  # stored: the sidecar no longer holds reads back
    assert counted(path, exporter.started, exporter.exported_to).problem() is None
    telemetry.shutdown()


def test_points_beyond_the_pending_limit_are_counted_as_dropped(tmp_path: Path):
    path = tmp_path / "telemetry.db"
    telemetry, exporter = pipeline(path, max_pending=1)
    t0 = time.time()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    requests(telemetry, 4)  # 4 points per export: request_count, latency, its squares, (nothing over 100 ms)
    telemetry.flush()
    blocker.execute("ROLLBACK")
    blocker.close()
    telemetry.flush()
    series = counted(path, t0 - 1, exporter.exported_to)
    dropped = [loss for loss in series.loss if loss.kind == "dropped_points"]
    assert dropped and dropped[0].count >= 2
    assert "dropped_points" in series.problem()
    telemetry.shutdown()


def test_a_writer_that_died_leaves_its_last_interval_as_loss(tmp_path: Path):
    path = tmp_path / "telemetry.db"
    child = subprocess.Popen(["true"])
    child.wait()  # a pid that is gone
    now = time.time()
    with TelemetryStore(path) as store:
        store.write([], watermark=Watermark("dead", EP, now - 100, now - 200, False, child.pid, HOST))
        held = store.series(EP, [Arm("blue")], ["request_count"], now - 200, now - 50, 150)
        assert "behind" in held.problem()  # an open writer behind: reads wait for it
    telemetry, exporter = pipeline(path)  # the endpoint restarts: its new writer closes the dead one
    telemetry.flush()
    with TelemetryStore(path, readonly=True) as store:
        series = store.series(EP, [Arm("blue")], ["request_count"], now - 200, now - 50, 150)
        assert "writer_lost" in series.problem()
        assert next(w for w in series.writers if w.writer == "dead").closed
        after = store.series(EP, [Arm("blue")], ["request_count"], exporter.started, exporter.exported_to, 1)
        assert after.problem() is None  # once the new writer has exported, its windows are whole again
    telemetry.shutdown()


def test_a_dead_writer_with_a_known_interval_holds_back_only_its_last_interval(tmp_path: Path):
    child = subprocess.Popen(["true"])
    child.wait()
    now = time.time()
    with TelemetryStore(tmp_path / "telemetry.db") as store:
        store.write([], watermark=Watermark("dead", EP, now - 100, now - 200, False, child.pid, HOST, interval_s=10))

        def problem(start: float, end: float) -> str | None:
            return store.series(EP, [Arm("blue")], ["request_count"], start, end, end - start).problem()

        assert problem(now - 200, now - 100) is None  # before its watermark: complete
        assert "writer_lost" in problem(now - 100, now - 50)  # it died within one interval of its last export
        assert problem(now - 80, now - 50) is None  # after that, nothing is held back (nobody else writes)
        store.write([], watermark=Watermark("alive", EP, now - 60, now - 200, False, os.getpid(), HOST, 10))
        assert "behind" in problem(now - 80, now - 50)  # a live writer behind still holds reads back


def test_late_rows_never_change_a_verdict_already_recorded(tmp_path: Path):
    now = 1_700_000_000.0
    with TelemetryStore(path := tmp_path / "telemetry.db") as store:
        writer = Watermark("w", EP, now, now - 7200)
        points = [Point.counter(now - 60 * i, "request_count", 10, endpoint=EP, deployment="blue") for i in range(30)]
        store.write(points, watermark=writer)
        [first] = evaluate([ERROR_RATE], store, now=now, endpoint=EP)
        assert first.state == "ok" and first.samples == 300
        late = [Point.counter(now - 30, "server_error_count", 300, endpoint=EP, deployment="blue")]
        assert store.write(late, watermark=Watermark("w", EP, now + 60, now - 7200)) == 0  # refused
        [again] = evaluate([ERROR_RATE], store, now=now, endpoint=EP)
        assert (again.state, again.value, again.samples) == (first.state, first.value, first.samples)
        [next_window] = evaluate([ERROR_RATE], store, now=now + 60, endpoint=EP)
        assert next_window.state == "error" and "late_points" in next_window.message
    assert path.exists()


@pytest.mark.parametrize(
    ("loss_span", "interval", "touches"),
    [((10, 20), (0, 10), False), ((10, 20), (15, 30), True), ((10, 20), (20, 30), False), ((10, 10), (0, 10), True)],
)
def test_loss_spans_are_half_open_like_windows(loss_span, interval, touches):
    from nerops.telemetry.source import Loss

    assert Loss("export_failures", 1, *loss_span).touches(*interval) is touches
