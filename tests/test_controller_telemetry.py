"""The controller's own telemetry: the points each committed step writes, and the ``rollout_stuck`` rule over them.

Rollouts are driven through the real controller (``look``, ``apply_command``) against a small endpoint fake that
keeps Azure ML's traffic rules (``nerops.serving.state``) and refuses a stale ETag, a real ledger and record store,
and the test profile's plan; the rule runs on a real store with points at chosen times.
"""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from types import SimpleNamespace

import pytest

from nerops.controller import run
from nerops.controller.records import RecordStore, RolloutRecord
from nerops.controller.run import Controller, apply_command, look
from nerops.controller.telemetry import StoreWriter, controller_telemetry, step_points
from nerops.errors import ConflictError
from nerops.ledger import Ledger
from nerops.rollout.actions import Command
from nerops.rollout.machine import ENDED, start
from nerops.rollout.plan import build_plan
from nerops.rollout.policy import load_policy
from nerops.serving.port import EndpointView
from nerops.serving.state import DeploymentSpec, EndpointState, with_deployment, with_traffic, without_deployment
from nerops.settings import Settings
from nerops.telemetry import Point, TelemetryStore
from nerops.telemetry.alerts import RulesError, evaluate, load_rules, parse_rules
from nerops.telemetry.disabled import DisabledTelemetry
from nerops.telemetry.kql import scheduled_query_rule, to_kql
from nerops.telemetry.rollout_points import ENDED_PHASES, RolloutPoint
from nerops.telemetry.source import Watermark

T0 = 1_700_000_000.0
NOW = T0 + 86_400.0
MIN = 60.0


# ------------------------------------------------------------------------------------------------ fakes


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """The endpoint-control port over the pure endpoint rules: weights sum to 100, a deployment taking traffic is
    not deleted, and a write naming a stale ETag is refused (412), as the real endpoint does."""

    url, key = "http://endpoint.invalid", "key"

    def __init__(self, *deployments: tuple[str, str], live: str) -> None:
        state = EndpointState("ner")
        for name, version in deployments:
            state = with_deployment(state, DeploymentSpec(name, f"models:/resume-ner/{version}", version))
        self.state = with_traffic(state, {live: 100})
        self.weights: list[dict[str, int]] = []

    def read(self) -> EndpointView:
        return EndpointView(self.state.to_dict(), self.state.etag())

    def set_traffic(self, traffic, mirror=None, *, if_match=None, change=None) -> dict:
        if if_match is not None and if_match != self.state.etag():
            raise ConflictError("412 Precondition Failed: the endpoint changed since it was read")
        self.state = with_traffic(self.state, traffic, mirror or {})
        self.weights.append(dict(self.state.traffic))
        return self.state.to_dict()

    def delete_deployment(self, name: str, *, change=None) -> dict:
        self.state = without_deployment(self.state, name)
        return self.state.to_dict()


class FullDisk:
    """A writer whose disk is full."""

    def write(self, points) -> int:
        raise OSError(28, "No space left on device")


@pytest.fixture
def plan():
    policy, _ = load_policy()
    return build_plan(policy, "test", policy_sha256="x")


def rollout(tmp_path: Path, plan, telemetry) -> tuple[Controller, RolloutRecord, Endpoint]:
    """v2 starting on candidate v2-1 beside stable blue (v1), as ``begin`` leaves it: the candidate at 0 %."""
    control = Endpoint(("blue", "1"), ("v2-1", "2"), live="blue")
    gov = SimpleNamespace(ledger=Ledger(tmp_path / "ledger.jsonl"), model="resume-ner")
    ctl = Controller(
        gov, RecordStore(tmp_path / "rollouts"), control, None, plan, "", "tester", "ner", clock=Clock(T0),
        telemetry=telemetry,
    )  # fmt: skip
    state, _ = start(plan, endpoint="ner", version="2", attempt=1, candidate="v2-1", stable="blue", now=T0)
    record = RolloutRecord(
        "ner", "resume-ner", "2", 1, "v2-1", "blue", "1", plan.profile, "x", "tester", T0 + 60, created=T0, updated=T0
    ).with_machine(state)
    ctl.store.write(record)
    return ctl, record, control


def drive(ctl: Controller, record: RolloutRecord, monkeypatch) -> list[RolloutRecord]:
    """Readiness answered, a look without metrics (traffic frozen), a pause, an abort: one second apart."""
    monkeypatch.setattr(run, "smoke", lambda url, key, deployment, n: [200] * n)  # the smoke requests, answered
    steps = []
    for when, step in (
        (1, lambda r: look(ctl, r)[0]),
        (2, lambda r: look(ctl, r)[0]),
        (3, lambda r: apply_command(ctl, r, Command("pause", "ops", "looking into it"))[0]),
        (4, lambda r: apply_command(ctl, r, Command("abort", "ops", "not today"))[0]),
    ):
        ctl.clock.now = T0 + when
        record = step(record)
        steps.append(record)
    return steps


def points(path: Path) -> list[tuple]:
    with sqlite3.connect(path) as db:
        return db.execute(
            "SELECT time, metric, value, endpoint, rollout, deployment, model_version, phase, interval_s "
            "FROM controller_points ORDER BY time, metric"
        ).fetchall()


# ------------------------------------------------------------------------------------ the controller's points


def test_every_committed_step_records_phase_weight_and_the_time_of_the_look(tmp_path, plan, monkeypatch):
    path = tmp_path / "telemetry.db"
    ctl, record, control = rollout(tmp_path, plan, StoreWriter(path))
    steps = drive(ctl, record, monkeypatch)
    assert [(r.state["phase"], r.state["weight"]) for r in steps] == [
        ("progressing", 5), ("progressing", 5), ("paused", 5), ("aborted", 0),
    ]  # fmt: skip
    assert control.weights == [{"blue": 95, "v2-1": 5}, {"blue": 100}]
    rows = points(path)
    identity = ("ner", "ner/v2/1", "v2-1", "2")
    assert rows == [
        row
        for when, phase, weight in ((1, "progressing", 5), (2, "progressing", 5), (3, "paused", 5), (4, "aborted", 0))
        for row in (
            (T0 + when, "rollout_last_look_time", T0 + when, *identity, phase, 1.0),
            (T0 + when, "rollout_weight_percent", float(weight), *identity, phase, 1.0),
        )
    ]
    with TelemetryStore(path, readonly=True) as store:  # never mixed with the signals
        assert store.row_count("system") == store.row_count("model") == 0 and store.row_count("controller") == 8
        assert store.deployments(0, NOW) == []


def test_a_readiness_look_is_timed_when_its_smoke_requests_are_answered_so_the_canary_keeps_its_deadline(
    tmp_path, plan, monkeypatch
):
    """Two new workers loading a model under load took 20 s to answer; the canary (12 s deadline in the test
    profile) starts when its traffic moves, after them, and is not aborted by the time spent waiting."""
    path = tmp_path / "telemetry.db"
    ctl, record, control = rollout(tmp_path, plan, StoreWriter(path))

    def slow_smoke(url, key, deployment, n):
        ctl.clock.now += 20.0
        return [200] * n

    monkeypatch.setattr(run, "smoke", slow_smoke)
    ctl.clock.now = T0 + 1
    record = look(ctl, record)[0]
    assert record.machine.step == 1 and record.machine.step_started == T0 + 21
    assert points(path)[0][:3] == (T0 + 21, "rollout_last_look_time", T0 + 21)
    ctl.clock.now = T0 + 23  # 22 s after the look began, 2 s into the canary: no metrics source, frozen, not ended
    record = look(ctl, record)[0]
    assert (record.state["phase"], record.state["weight"]) == ("progressing", 5)
    assert control.weights == [{"blue": 95, "v2-1": 5}]
    ctl.clock.now = T0 + 21 + plan.steps[1].deadline  # its deadline, counted from when its traffic moved
    record = look(ctl, record)[0]
    assert record.state["phase"] == "aborted" and control.weights[-1] == {"blue": 100}


def test_the_rule_sees_the_driven_rollout_stuck_while_paused_and_never_once_it_ended(tmp_path, plan, monkeypatch):
    path = tmp_path / "telemetry.db"
    ctl, record, _ = rollout(tmp_path, plan, StoreWriter(path))
    steps = drive(ctl, record, monkeypatch)
    stuck = next(r for r in load_rules() if r.name == "rollout_stuck")
    with TelemetryStore(path) as store:
        with sqlite3.connect(path) as db:  # as if the abort had not happened yet: the paused owner went away
            db.execute("DELETE FROM controller_points WHERE phase = 'aborted'")
        assert [r.state for r in evaluate([stuck], store, now=T0 + 3 + 4)] == ["ok"]  # 4 intervals of 1s
        [fired] = evaluate([stuck], store, now=T0 + 3 + 6)
        assert (fired.state, fired.deployment, fired.label, fired.value) == ("firing", "v2-1", "ner/v2/1", 6.0)
        store.write(step_points(steps[-1], T0 + 4, plan.interval))  # the abort's points, as the controller wrote them
        assert evaluate([stuck], store, now=T0 + 3600) == []  # ended: no rollout to judge, no deployment with traffic


@pytest.mark.parametrize("broken", ["a read-only store", "a full disk"])
def test_a_failing_telemetry_write_does_not_fail_the_step(tmp_path, plan, monkeypatch, caplog, broken):
    path = tmp_path / "telemetry.db"
    TelemetryStore(path).close()
    writer = TelemetryStore(path, readonly=True) if broken == "a read-only store" else FullDisk()
    ctl, record, control = rollout(tmp_path, plan, writer)
    with caplog.at_level(logging.WARNING, logger="nerops.controller"):
        steps = drive(ctl, record, monkeypatch)
    assert [r.state["phase"] for r in steps] == ["progressing", "progressing", "paused", "aborted"]
    saved = ctl.store.load("ner", "2", 1)
    assert saved.state["phase"] == "aborted" and saved.outbox == () and saved.state["weights"] == [0, 5, 0]
    assert control.weights == [{"blue": 95, "v2-1": 5}, {"blue": 100}]  # every step's traffic moved
    assert [e.kind for e in ctl.gov.ledger.entries()][-1] == "rollout_finished"
    warnings = [r.getMessage() for r in caplog.records if "telemetry was not written" in r.getMessage()]
    assert len(warnings) == 4 and all(w.startswith("rollout ner/v2/1: ") for w in warnings)
    assert points(path) == []


def test_the_factory_writes_into_the_state_folder_or_nowhere_when_telemetry_is_off(tmp_path):
    writer = controller_telemetry(Settings(state_dir=tmp_path))
    assert isinstance(writer, StoreWriter) and writer.path == tmp_path.resolve() / "telemetry" / "telemetry.db"
    assert not writer.path.exists()  # opened at the first write, not before the controller acts
    off = controller_telemetry(Settings(state_dir=tmp_path, telemetry_enabled=False))
    assert isinstance(off, DisabledTelemetry) and off.write([]) == 0


def test_controller_points_and_signal_points_cannot_be_mixed(tmp_path):
    with pytest.raises(ValueError, match="is a system metric, not one of the controller's"):
        RolloutPoint(T0, "request_count", 1.0, "ner", "ner/v2/1", "v2-1", "2", "progressing")
    with TelemetryStore(tmp_path / "t.db") as store, pytest.raises(ValueError, match="write it as a RolloutPoint"):
        store.write([Point.counter(T0, "rollout_weight_percent", 5.0, deployment="v2-1")])
    assert ENDED_PHASES == ENDED  # the telemetry's copy of the rollout vocabulary


def test_a_version_2_store_gets_the_controller_table(tmp_path):
    path = tmp_path / "old.db"
    TelemetryStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("DROP TABLE controller_points")
        db.execute("PRAGMA user_version = 2")
    with TelemetryStore(path) as store:
        store.write([RolloutPoint(T0, "rollout_weight_percent", 5.0, "ner", "ner/v2/1", "v2-1", "2", "progressing")])
        assert store.row_count("controller") == 1
        assert store._read("PRAGMA user_version", ())[0][0] == 3


# ------------------------------------------------------------------------------------------ the rollout_stuck rule


def look_points(rollout: str, when: float, phase: str, *, interval: float = MIN, endpoint: str = "ner"):
    version = rollout.split("/")[1][1:]
    candidate = f"v{version}-{rollout.split('/')[2]}"
    identity = {"endpoint": endpoint, "rollout": rollout, "deployment": candidate, "model_version": version}
    return [
        RolloutPoint(when, "rollout_weight_percent", 25.0, **identity, phase=phase, interval_s=interval),
        RolloutPoint(when, "rollout_last_look_time", when, **identity, phase=phase, interval_s=interval),
    ]


@pytest.fixture
def stuck():
    return next(rule for rule in load_rules() if rule.name == "rollout_stuck")


@pytest.fixture
def store(tmp_path: Path):
    with TelemetryStore(tmp_path / "telemetry.db", retention_days=None) as store:
        store.write(
            [Point.counter(NOW - k * MIN, "request_count", 30, endpoint="ner", deployment="blue") for k in range(10)],
            watermark=Watermark("endpoint", "ner", NOW, started=0.0),
        )
        yield store


def test_rollout_stuck_fires_for_a_rollout_without_a_look_for_more_than_5_of_its_intervals(store, stuck):
    store.write(
        look_points("ner/v2/1", NOW - 30 * MIN, "progressing")
        + look_points("ner/v2/1", NOW - 10 * MIN, "progressing")  # 10 intervals of 1m ago: stuck
        + look_points("ner/v3/1", NOW - 2 * MIN, "progressing")  # fresh
        + look_points("ner/v4/2", NOW - 5 * MIN, "paused")  # exactly 5 intervals: not more than 5
        + look_points("ner/v5/1", NOW - 10, "awaiting_approval", interval=1.0)  # 10 of its 1s intervals
        + look_points("ner/v6/1", NOW - 2 * 3600, "progressing", interval=3600.0)  # 2 of its hours
    )
    results = {(r.deployment, r.label): r for r in evaluate([stuck], store, now=NOW)}
    assert {key: r.state for key, r in results.items()} == {
        ("blue", ""): "ok",  # a deployment with traffic and no rollout of its own
        ("v2-1", "ner/v2/1"): "firing",
        ("v3-1", "ner/v3/1"): "ok",
        ("v4-2", "ner/v4/2"): "ok",
        ("v5-1", "ner/v5/1"): "firing",
        ("v6-1", "ner/v6/1"): "ok",
    }
    fired = results[("v2-1", "ner/v2/1")]
    assert (fired.value, fired.threshold, fired.op, fired.samples) == (10.0, 5.0, ">", 1.0)
    assert "rollout ner/v2/1 (progressing, candidate v2-1 v2): last look 10m ago, 10 intervals of 1m" in fired.message
    assert "FROM controller_points" in fired.query and "'rollout_last_look_time'" in fired.query
    assert results[("v4-2", "ner/v4/2")].value == 5.0
    assert "no rollout with blue as its candidate is running" in results[("blue", "")].message


def test_rollout_stuck_is_silent_once_a_rollout_ended_whatever_came_before(store, stuck):
    for rollout, phase in (("ner/v2/1", "promoted"), ("ner/v3/1", "rolled_back"), ("ner/v4/1", "aborted")):
        store.write(look_points(rollout, NOW - 60 * MIN, "progressing") + look_points(rollout, NOW - 50 * MIN, phase))
    store.write(look_points("ner/v5/1", NOW - 3 * 86400, "progressing"))  # silent for longer than the lookback
    store.write(look_points("other/v7/1", NOW - 60 * MIN, "progressing", endpoint="other"))
    assert [(r.deployment, r.state) for r in evaluate([stuck], store, now=NOW, endpoint="ner")] == [("blue", "ok")]
    [other] = [r for r in evaluate([stuck], store, now=NOW) if r.label]
    assert (other.label, other.state) == ("other/v7/1", "firing")
    asked = evaluate([stuck], store, now=NOW, deployments=["blue"], endpoint="other")
    assert [(r.deployment, r.state) for r in asked] == [("blue", "ok"), ("v7-1", "firing")]  # a stuck one is told


def test_rollout_stuck_compiles_to_a_scheduled_query_rule_over_appmetrics(stuck):
    kql = to_kql(stuck)
    for text in (
        '| where Name == "rollout_last_look_time"',
        'rollout = tostring(Properties["rollout"])',
        'interval_s = todouble(Properties["interval_s"])',
        "| summarize arg_max(last_look, endpoint, deployment, model_version, phase, interval_s) by rollout",
        '| where phase !in ("aborted", "promoted", "rolled_back") and interval_s > 0',
        "(now_ - unixtime_seconds_todatetime(last_look)) / 1s / interval_s",
        "| where value > threshold_",
        "let threshold_ = 5;",
        "TimeGenerated > now_ - 1d",
    ):
        assert text in kql, text
    properties = scheduled_query_rule(stuck)
    assert (properties["evaluationFrequency"], properties["windowSize"]) == ("PT5M", "P1D")
    criteria = properties["criteria"]["allOf"][0]
    assert [d["name"] for d in criteria["dimensions"]] == ["endpoint", "rollout", "deployment"]
    assert criteria["threshold"] == 0 and criteria["operator"] == "GreaterThan"


GOOD = """
version: 1
rules:
  - name: stuck
    description: stuck
    signal: controller
    metric: rollout_last_look_time
    aggregation: staleness
    window: 5m
    min_samples: 1
    condition: {op: ">", threshold: 5}
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("signal: controller", "signal: system"), "field 'signal': aggregation 'staleness' reads the controller's"),
        (("aggregation: staleness", "aggregation: mean"), "field 'aggregation': a 'controller' rule measures"),
        (("metric: rollout_last_look_time", "metric: rollout_weight_percent"), "needs a timestamp gauge"),
        (("metric: rollout_last_look_time", "metric: request_count"), "is a system metric, not a controller one"),
        (("threshold: 5", "factor: 2, baseline: {window: 1h}"), "field 'condition': aggregation 'staleness' takes"),
        (("severity", "severity"), None),
    ],
)
def test_a_bad_controller_rule_names_the_field(change, message):
    text = GOOD.replace(*change)
    if message is None:
        [rule] = parse_rules(text)
        assert rule.lookback_s == 86400.0 and rule.expression == "intervals since rollout_last_look_time"
        return
    with pytest.raises(RulesError, match=message):
        parse_rules(text)


def test_lookback_is_only_for_staleness():
    latency = GOOD.replace("signal: controller", "signal: system").replace(
        "metric: rollout_last_look_time\n    aggregation: staleness",
        "metric: inference_latency_ms\n    aggregation: mean",
    )
    assert parse_rules(latency)[0].aggregation == "mean"
    with pytest.raises(RulesError, match="field 'lookback': only for aggregation 'staleness'"):
        parse_rules(latency.replace("min_samples: 1", "min_samples: 1\n    lookback: 1d"))
