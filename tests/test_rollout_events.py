"""Rollout notifications: the ``nerops.rollout.*`` events a committed step sends, and the example automation.

The derivation is table-tested on states the real machine produces (start/advance/command). Emission is tested
against a real Prefect server (the session's ``prefect_harness``): rollouts driven through the real controller
(``look``, ``apply_command``) against a small endpoint fake, the events read back with ``POST /api/events/filter``;
then the automation file, created on that server, sends a real notification to a webhook this test listens on. An
unreachable API and no API at all must cost the step a warning, never the rollback.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from dataclasses import replace
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from nerops.controller import notify, run
from nerops.controller.records import RecordStore, RolloutRecord
from nerops.controller.run import Controller, apply_command, look
from nerops.ledger import Ledger
from nerops.rollout.actions import Command
from nerops.rollout.machine import RolloutState, advance, command, start
from nerops.rollout.plan import Plan, build_plan
from nerops.rollout.policy import Approval, Pause, load_policy
from nerops.rollout.verdicts import MetricEvidence, Verdict
from nerops.serving.client import free_port
from nerops.serving.port import EndpointView
from nerops.serving.state import DeploymentSpec, EndpointState, with_deployment, with_traffic, without_deployment

T0 = 1_700_000_000.0
AUTOMATION = Path(__file__).resolve().parents[1] / "automations" / "rollout-notifications.yaml"
ERRORS = MetricEvidence(
    "server-error-rate", "rate", "enforce", "candidate <= 1.5 x stable", "unhealthy", "worse", 412.5, 200.0,
    0.005, 0.5, 640.0, 12000.0, 200, 0.0421875, 0.00191666, 8, ("live",),
)  # fmt: skip
LATENCY = replace(ERRORS, metric="latency-p95", status="healthy", mode="dry_run", e_value=0.3, reason="ok")


def verdict(status: str, now: float, reason: str = "", metrics=()) -> Verdict:
    return Verdict(status, reason or f"the judge says {status}", now, (T0, now), 1.0, tuple(metrics))


@pytest.fixture(scope="module")
def plan() -> Plan:
    policy, _ = load_policy()
    return build_plan(policy, "test", policy_sha256="x")


# ------------------------------------------------------------------------------- events_for, on real transitions


def at_step(plan: Plan, weight: int, *, approval: bool = False) -> tuple[RolloutState, float]:
    """The rollout walked healthy from readiness up to the step of ``weight`` % (or to its approval wait)."""
    state, _ = start(
        plan, endpoint="ner", version="2", attempt=1, candidate="v2-1", stable="blue", now=T0, approval=approval
    )
    now = T0
    while state.weight != weight and state.phase == "progressing":
        now = max(now + 1, state.wait_until)
        state, _ = advance(plan, state, verdict("healthy", now), now)
    return state, now


def look_at(plan, state, status, now, **kw):
    seen = verdict(status, now, **kw)
    new, actions = advance(plan, state, seen, now)
    return new, actions, {"look": seen.to_dict()}


def verb(plan, state, name, now, reason="ops said so"):
    new, actions = command(plan, state, Command(name, "ops@host", reason), now)
    return new, actions, {"command": {"verb": name, "actor": "ops@host", "reason": reason}}


def unhealthy_at_25(plan):
    state, now = at_step(plan, 25)
    return look_at(plan, state, "unhealthy", now + 1, reason="server-error-rate worse", metrics=(LATENCY, ERRORS))


def metrics_fail(plan):
    state, now = at_step(plan, 5)
    return look_at(plan, state, "error", now + 1, reason="the metrics source failed: database is locked")


def still_failing(plan):
    state, now = at_step(plan, 5)
    frozen, _ = advance(plan, state, verdict("error", now + 1), now + 1)
    return look_at(plan, frozen, "error", now + 2)


def metrics_back(plan):
    state, now = at_step(plan, 5)
    frozen, _ = advance(plan, state, verdict("error", now + 1), now + 1)
    return look_at(plan, frozen, "no_data", now + 2)


def step_deadline(plan):
    state, _ = at_step(plan, 5)
    return look_at(plan, state, "no_data", state.deadline, reason="12 of 200 samples")


def step_deadline_rollback(plan):
    plan = replace(plan, steps=tuple(replace(s, on_deadline="rollback") for s in plan.steps))
    state, _ = at_step(plan, 25)
    return look_at(plan, state, "inconclusive", state.deadline + 1)


def paused(plan, deadline_default="abort"):
    plan = replace(plan, pause=Pause(deadline="30s", on_deadline=deadline_default))
    state, now = at_step(plan, 5)
    held, _, _ = verb(plan, state, "pause", now + 1)
    return plan, held


def pause_deadline_abort(plan):
    plan, held = paused(plan)
    return look_at(plan, held, "healthy", held.pause_until)


def pause_deadline_resume(plan):
    plan, held = paused(plan, "resume")
    return look_at(plan, held, "inconclusive", held.pause_until)


def awaiting(plan, on_timeout="abort"):
    plan = replace(plan, approval=Approval(before=50, timeout="6s", on_timeout=on_timeout))
    state, _ = at_step(plan, 50, approval=True)
    assert state.phase == "awaiting_approval"
    return plan, state


def approval_timeout_abort(plan):
    plan, state = awaiting(plan)
    return look_at(plan, state, "healthy", state.approval_until)


def approval_timeout_continue(plan):
    plan, state = awaiting(plan, "continue")
    return look_at(plan, state, "healthy", state.approval_until)


def manual_rollback_quoting_a_deadline(plan):
    state, now = at_step(plan, 25)
    return verb(plan, state, "rollback", now + 1, "canary 25% reached its deadline with verdict no_data, as feared")


def manual_abort_while_paused(plan):
    _, held = paused(plan)
    return verb(plan, held, "abort", held.paused_at + 1)


def promoted(plan):
    state, now = at_step(plan, 100)
    return look_at(plan, state, "healthy", state.wait_until)


def healthy_step(plan):
    state, now = at_step(plan, 5)
    return look_at(plan, state, "healthy", state.wait_until)


def pause_verb(plan):
    state, now = at_step(plan, 5)
    return verb(plan, state, "pause", now + 1)


def approval_wait_begins(plan):
    plan = replace(plan, approval=Approval(before=50, timeout="6s", on_timeout="abort"))
    state, now = at_step(plan, 25, approval=True)
    return look_at(plan, state, "healthy", state.wait_until)


CASES = [  # (transition, events, payload facts of the last event)
    (unhealthy_at_25, ["rolled-back"], {"weight_at": 25, "weight": 0, "phase": "rolled_back", "by": "look"}),
    (metrics_fail, ["frozen"], {"weight_at": 5, "reason": "the metrics source failed: database is locked"}),
    (still_failing, [], {}),
    (metrics_back, [], {}),
    (step_deadline, ["deadline-reached", "aborted"], {"weight_at": 5, "phase": "aborted"}),
    (step_deadline_rollback, ["deadline-reached", "rolled-back"], {"weight_at": 25, "phase": "rolled_back"}),
    (pause_deadline_abort, ["deadline-reached", "aborted"], {"phase": "aborted"}),
    (pause_deadline_resume, ["deadline-reached"], {"phase": "progressing", "weight_at": 5}),
    (approval_timeout_abort, ["deadline-reached", "aborted"], {"weight_at": 25}),
    (approval_timeout_continue, ["deadline-reached"], {"phase": "progressing", "weight": 50}),
    (manual_rollback_quoting_a_deadline, ["rolled-back"], {"by": "command", "actor": "ops@host", "verdict": None}),
    (manual_abort_while_paused, ["aborted"], {"by": "command", "command": "abort", "weight_at": 5}),
    (promoted, ["promoted"], {"weight_at": 100, "weight": 100, "phase": "promoted"}),
    (healthy_step, [], {}),
    (pause_verb, [], {}),
    (approval_wait_begins, [], {}),
]
DEADLINES = {  # (kind, outcome) of each deadline-reached
    step_deadline: ("step", "aborted"),
    step_deadline_rollback: ("step", "rolled_back"),
    pause_deadline_abort: ("pause", "aborted"),
    pause_deadline_resume: ("pause", "resumed"),
    approval_timeout_abort: ("approval", "aborted"),
    approval_timeout_continue: ("approval", "continued"),
}


def record_of(state: RolloutState, lines: int = 7) -> RolloutRecord:
    return RolloutRecord(
        "ner", "resume-ner", "2", 1, "v2-1", "blue", "1", "test", "x", "flow-run/abc", T0 + 60, created=T0,
        evidence_lines=lines,
    ).with_machine(state)  # fmt: skip


@pytest.mark.parametrize(("transition", "names", "facts"), CASES, ids=[c[0].__name__ for c in CASES])
def test_each_transition_announces_what_it_did(plan, transition, names, facts):
    after, actions, step = transition(plan)
    events = notify.events_for(after, actions, record_of(after), step, T0 + 99)
    assert [e.event for e in events] == [f"nerops.rollout.{n}" for n in names]
    if not events:
        return
    last = events[-1].payload
    assert {k: last[k] for k in facts} == facts
    assert last["rollout"] == "ner/v2/1" and last["reason"] and last["summary"].startswith("ner/v2/1")
    assert last["reason"] in last["summary"] and last["time"] == T0 + 99 and last["evidence_line"] == 7
    if transition in DEADLINES:
        deadline = events[0].payload["deadline"]
        assert (deadline["kind"], deadline["outcome"]) == DEADLINES[transition]
        assert "deadline" in events[0].payload["reason"] or "no approval within" in events[0].payload["reason"]
    else:
        assert all("deadline" not in e.payload for e in events)
    for e in events:
        assert e.resource == {
            "prefect.resource.id": "nerops.rollout.ner/v2/1",
            "prefect.resource.name": "ner/v2/1",
            "nerops.endpoint": "ner",
            "nerops.model": "resume-ner",
            "nerops.version": "2",
        }
        assert [(r["prefect.resource.id"], r["prefect.resource.role"]) for r in e.related] == [
            ("nerops.model-version.resume-ner.2", "model-version"),
            ("nerops.model-version.resume-ner.1", "stable-model-version"),
            ("nerops.endpoint.ner", "endpoint"),
        ]


def test_a_rollback_carries_the_verdicts_numbers_worst_metric_first(plan):
    after, actions, step = unhealthy_at_25(plan)
    [event] = notify.events_for(after, actions, record_of(after), step, T0)
    found = event.payload["verdict"]
    assert (found["status"], found["reason"], found["metrics_omitted"]) == ("unhealthy", "server-error-rate worse", 0)
    assert [m["metric"] for m in found["metrics"]] == ["server-error-rate", "latency-p95"]
    assert found["metrics"][0] == {
        "metric": "server-error-rate", "status": "unhealthy", "mode": "enforce", "candidate": 0.04219,
        "stable": 0.001917, "candidate_samples": 640.0, "stable_samples": 12000.0, "min_samples": 200,
        "tested": "candidate <= 1.5 x stable", "e_value": 412.5, "threshold": 200.0, "reason": "worse",
    }  # fmt: skip
    assert event.payload["reason"] == "unhealthy: server-error-rate worse"
    assert event.payload["summary"] == "ner/v2/1 rolled back at 25 %: unhealthy: server-error-rate worse"


def test_event_ids_are_one_per_step_and_event(plan):
    after, actions, step = step_deadline(plan)
    first = [e.id for e in notify.events_for(after, actions, record_of(after), step, T0)]
    assert first == [e.id for e in notify.events_for(after, actions, record_of(after), step, T0 + 5)]  # resent
    assert len(set(first)) == 2
    assert set(first).isdisjoint(e.id for e in notify.events_for(after, actions, record_of(after, 8), step, T0))
    again = replace(record_of(after), created=T0 + 1)  # the same rollout id after a reset of the state folder
    assert set(first).isdisjoint(e.id for e in notify.events_for(after, actions, again, step, T0))


# ---------------------------------------------------------------------------------- the controller, emitting


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Endpoint:
    """The endpoint-control port over the pure endpoint rules (weights sum to 100), as the real endpoint keeps them."""

    url, key = "http://endpoint.invalid", "key"

    def __init__(self, name: str) -> None:
        state = EndpointState(name)
        for deployment, version in (("blue", "1"), ("v2-1", "2")):
            state = with_deployment(state, DeploymentSpec(deployment, f"models:/resume-ner/{version}", version))
        self.state = with_traffic(state, {"blue": 100})
        self.weights: list[dict[str, int]] = []

    def read(self) -> EndpointView:
        return EndpointView(self.state.to_dict(), self.state.etag())

    def set_traffic(self, traffic, mirror=None, *, if_match=None, change=None) -> dict:
        self.state = with_traffic(self.state, traffic, mirror or {})
        self.weights.append(dict(self.state.traffic))
        return self.state.to_dict()

    def delete_deployment(self, name: str, *, change=None) -> dict:
        self.state = without_deployment(self.state, name)
        return self.state.to_dict()


class Governance:
    """What the executor asks of governance: a real ledger, and a registry that takes the archived tag."""

    model = "resume-ner"

    def __init__(self, path: Path) -> None:
        self.ledger = Ledger(path)
        self.applied: list[list[str]] = []

    def state(self) -> None:
        return None

    def apply(self, state, versions: list[str]) -> None:
        self.applied.append(list(versions))


def rollout(tmp_path: Path, plan: Plan, endpoint: str) -> tuple[Controller, RolloutRecord, Endpoint]:
    """v2 starting on candidate v2-1 beside stable blue (v1), as ``begin`` leaves it: the candidate at 0 %."""
    control = Endpoint(endpoint)
    gov = Governance(tmp_path / "ledger.jsonl")
    store = RecordStore(tmp_path / "rollouts")
    ctl = Controller(gov, store, control, None, plan, "", "tester", endpoint, clock=Clock(T0))
    state, _ = start(plan, endpoint=endpoint, version="2", attempt=1, candidate="v2-1", stable="blue", now=T0)
    record = RolloutRecord(
        endpoint, "resume-ner", "2", 1, "v2-1", "blue", "1", plan.profile, "x", "tester", T0 + 60, created=time.time()
    ).with_machine(state)
    ctl.store.write(record)
    return ctl, record, control


def freeze_then_roll_back(ctl: Controller, record: RolloutRecord, monkeypatch, rollback=None) -> RolloutRecord:
    """Readiness answered; a look without a metrics source (traffic frozen at 5 %); a manual rollback."""
    monkeypatch.setattr(run, "smoke", lambda url, key, deployment, n: [200] * n)
    ctl.clock.now = T0 + 1
    record = look(ctl, record)[0]
    ctl.clock.now = T0 + 2
    record = look(ctl, record)[0]
    assert record.state["frozen"] == "no metrics source configured"
    ctl.clock.now = T0 + 3
    cmd = Command("rollback", "ops@host", "the candidate looks wrong")
    record = rollback(ctl, record, cmd) if rollback else apply_command(ctl, record, cmd)[0]
    return record


def outside_any_run(fn, *args):
    """``fn(*args)`` as the CLI runs it: with no flow or task run context (one an earlier test left in this thread
    would relate the events to its run); Prefect's settings context (the test server) stays."""
    import contextvars

    from prefect.context import FlowRunContext, TaskRunContext

    def run():
        FlowRunContext.__var__.set(None)
        TaskRunContext.__var__.set(None)
        return fn(*args)

    return contextvars.copy_context().run(run)


def assert_rolled_back(ctl: Controller, record: RolloutRecord, control: Endpoint) -> None:
    assert record.state["phase"] == "rolled_back" and record.outbox == ()
    assert control.weights == [{"blue": 95, "v2-1": 5}, {"blue": 100}]  # traffic went back
    assert [e.kind for e in ctl.gov.ledger.entries()][-2:] == ["rollback", "rollout_finished"]
    assert ctl.gov.applied == [["2"]] and "v2-1" not in control.state.deployments  # archived, scaled down


def read_back(resource_prefix: str, count: int, timeout_s: float = 30.0) -> list:
    """The server's stored events of these rollouts (``POST /api/events/filter``), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventResourceFilter

    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as client:
        while True:
            query = EventFilter(resource=EventResourceFilter(id_prefix=[resource_prefix]), order="ASC")
            found = client.read_events(filter=query, limit=50).events  # the server refuses more than 50
            if len(found) >= count or time.monotonic() > deadline:
                return found
            time.sleep(0.25)


def test_a_frozen_then_rolled_back_rollout_reaches_the_prefect_server(tmp_path, plan, monkeypatch, prefect_harness):
    from prefect import flow

    endpoint = f"ev-{uuid.uuid4().hex[:8]}"
    ctl, record, control = rollout(tmp_path, plan, endpoint)

    def in_a_flow_run(ctl, record, cmd):  # as rollback-model does: Prefect relates the events to the run
        @flow(name="rollback-model")
        def rollback_model() -> str:
            return apply_command(ctl, record, cmd)[0].state["phase"]

        assert rollback_model() == "rolled_back"
        return ctl.store.load(record.endpoint, record.version, record.attempt)

    record = outside_any_run(freeze_then_roll_back, ctl, record, monkeypatch, in_a_flow_run)
    assert_rolled_back(ctl, record, control)
    frozen, rolled_back = read_back(f"nerops.rollout.{endpoint}/", 2)
    assert (frozen.event, rolled_back.event) == ("nerops.rollout.frozen", "nerops.rollout.rolled-back")
    assert {frozen.resource.id, rolled_back.resource.id} == {f"nerops.rollout.{endpoint}/v2/1"}
    assert rolled_back.resource["nerops.endpoint"] == endpoint and rolled_back.resource["nerops.version"] == "2"
    assert frozen.payload["reason"] == "no metrics source configured" and frozen.payload["weight"] == 5
    assert rolled_back.payload["weight_at"] == 5 and rolled_back.payload["actor"] == "ops@host"
    assert rolled_back.payload["reason"] == "manual rollback (rollback by ops@host: the candidate looks wrong)"
    roles = {r.role: r.id for r in rolled_back.related}
    assert roles["model-version"] == "nerops.model-version.resume-ner.2" and roles["flow"].startswith("prefect.flow.")
    assert roles["flow-run"].startswith("prefect.flow-run.")  # added by Prefect inside the run
    assert "flow-run" not in {r.role for r in frozen.related}  # the look ran outside a flow (as the CLI does)


class Hook(BaseHTTPRequestHandler):
    received: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        Hook.received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def webhook():
    server = HTTPServer(("127.0.0.1", 0), Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    Hook.received = []
    yield f"http://127.0.0.1:{server.server_port}/hook", Hook.received
    server.shutdown()


def test_the_example_automation_sends_a_rollback_with_its_reason(tmp_path, plan, monkeypatch, prefect_harness, webhook):
    """The file as shipped, its block swapped for a webhook this test listens on (the Slack block posts to Slack)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    url, received = webhook
    hook = CustomWebhookNotificationBlock(
        name="test", url=url, json_data={"subject": "{{subject}}", "body": "{{body}}"}
    )
    raw = yaml.safe_load(AUTOMATION.read_text(encoding="utf-8"))
    raw["actions"][0]["block_document_id"] = str(hook.save(f"hook-{uuid.uuid4().hex[:8]}"))
    with get_client(sync_client=True) as client:
        automation = client.create_automation(AutomationCore.model_validate(raw))
    try:
        endpoint = f"ev-{uuid.uuid4().hex[:8]}"
        ctl, record, control = rollout(tmp_path, plan, endpoint)
        assert_rolled_back(ctl, outside_any_run(freeze_then_roll_back, ctl, record, monkeypatch), control)
        deadline = time.monotonic() + 60
        while len(received) < 2 and time.monotonic() < deadline:
            time.sleep(0.25)
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation)
    by_subject = {m["subject"]: m["body"] for m in received}
    assert set(by_subject) == {f"nerops frozen: {endpoint}/v2/1", f"nerops rolled-back: {endpoint}/v2/1"}
    body = by_subject[f"nerops rolled-back: {endpoint}/v2/1"]
    assert body.startswith(
        f"{endpoint}/v2/1 rolled back at 5 %: manual rollback (rollback by ops@host: the candidate looks wrong)\n"
        f"resume-ner v2 on endpoint {endpoint}: candidate v2-1, stable blue (v1)."
    )
    assert body.endswith(f"Details: nerops rollout report {endpoint}/v2/1") and "Flow run" not in body
    assert "Verdict error: no metrics source configured" in by_subject[f"nerops frozen: {endpoint}/v2/1"]


# ----------------------------------------------------------------------------------- never in the way


def test_an_unreachable_prefect_api_costs_a_warning_not_the_rollback(tmp_path, plan, monkeypatch, caplog):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    ctl, record, control = rollout(tmp_path, plan, "ner")
    api = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    sent = []
    monkeypatch.setattr("prefect.events.emit_event", lambda *a, **kw: sent.append(a))
    with temporary_settings({PREFECT_API_URL: api}), caplog.at_level(logging.WARNING, logger="nerops.controller"):
        began = time.monotonic()
        record = freeze_then_roll_back(ctl, record, monkeypatch)
        took = time.monotonic() - began
    assert_rolled_back(ctl, record, control)
    warnings = [r.getMessage() for r in caplog.records if "events not sent" in r.getMessage()]
    assert warnings == [
        f"rollout ner/v2/1: events not sent (nerops.rollout.{name}): the Prefect API at {api} did not answer "
        f"(ConnectError: [Errno 111] Connection refused); the rollout goes on"
        for name in ("frozen", "rolled-back")
    ]
    assert sent == [] and took < 5.0  # nothing queued for a dead server (Prefect would retry it for seconds at exit)


def test_without_a_prefect_api_nothing_starts_a_temporary_server(tmp_path, plan, monkeypatch, caplog):
    from prefect.server.api.server import SubprocessASGIServer
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.setattr(SubprocessASGIServer, "_instances", {})  # as in a process that ran no flow (the CLI)
    ctl, record, control = rollout(tmp_path, plan, "ner")
    with temporary_settings(restore_defaults={PREFECT_API_URL}), caplog.at_level(logging.WARNING):
        record = freeze_then_roll_back(ctl, record, monkeypatch)
    assert_rolled_back(ctl, record, control)
    assert SubprocessASGIServer._instances == {}
    warnings = [r.getMessage() for r in caplog.records if "events not sent" in r.getMessage()]
    assert len(warnings) == 2 and all("no Prefect API is configured (PREFECT_API_URL)" in w for w in warnings)


def test_a_failing_emission_does_not_fail_the_step(tmp_path, plan, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("the events worker is gone")

    monkeypatch.setattr(notify, "unavailable", lambda: None)
    monkeypatch.setattr("prefect.events.emit_event", broken)
    ctl, record, control = rollout(tmp_path, plan, "ner")
    with caplog.at_level(logging.WARNING, logger="nerops.controller"):
        record = freeze_then_roll_back(ctl, record, monkeypatch)
    assert_rolled_back(ctl, record, control)
    assert sum("RuntimeError: the events worker is gone" in r.getMessage() for r in caplog.records) == 2


# ------------------------------------------------------------------------------------ the automation file


def test_the_automation_file_is_a_valid_prefect_automation_with_no_ignored_keys():
    from prefect.events.actions import SendNotification
    from prefect.events.schemas.automations import AutomationCore, EventTrigger
    from prefect.server.events import actions as server_actions

    raw = yaml.safe_load(AUTOMATION.read_text(encoding="utf-8"))
    automation = AutomationCore.model_validate(raw)  # what `prefect automation create --from-file` does
    assert set(raw) <= set(AutomationCore.model_fields)  # the model ignores unknown keys: a typo would vanish
    assert isinstance(automation.trigger, EventTrigger) and set(raw["trigger"]) <= set(EventTrigger.model_fields)
    assert automation.trigger.posture == "Reactive" and automation.trigger.expect == {"nerops.rollout.*"}
    [action] = automation.actions
    assert isinstance(action, SendNotification) and set(raw["actions"][0]) <= set(SendNotification.model_fields)
    server_actions.SendNotification.model_validate(action.model_dump())  # the server's check of the templates


def received(event: notify.RolloutEvent):
    from prefect.server.events.schemas.events import ReceivedEvent

    return ReceivedEvent(
        occurred=datetime.now(UTC), event=event.event, resource=event.resource, related=event.related,
        payload=event.payload, id=event.id,
    )  # fmt: skip


def test_the_automation_covers_every_rollout_event_and_renders_why(plan):
    from prefect.server.events.schemas.automations import AutomationCore as ServerAutomation
    from prefect.server.utilities.user_templates import render_user_template_sync

    raw = yaml.safe_load(AUTOMATION.read_text(encoding="utf-8"))
    automation = ServerAutomation.model_validate(raw)  # the server's model: its trigger decides what fires
    events = []
    for case in (unhealthy_at_25, metrics_fail, step_deadline, promoted):
        after, actions, step = case(plan)
        events += notify.events_for(after, actions, record_of(after), step, T0)
    names = {e.event for e in events}
    assert names == {
        f"nerops.rollout.{n}" for n in ("rolled-back", "frozen", "deadline-reached", "aborted", "promoted")
    }
    assert all(automation.trigger.covers(received(e)) for e in events)
    other = received(events[0]._replace(event="prefect.flow-run.Failed"))
    assert not automation.trigger.covers(other)
    foreign = events[0]._replace(resource={**events[0].resource, "prefect.resource.id": "prefect.flow-run.1"})
    assert not automation.trigger.covers(received(foreign))
    [action] = automation.actions
    context = {"event": received(events[0]), "flow_run": None}
    assert render_user_template_sync(action.subject, context) == "nerops rolled-back: ner/v2/1"
    body = render_user_template_sync(action.body, context).splitlines()
    assert body == [
        "ner/v2/1 rolled back at 25 %: unhealthy: server-error-rate worse",
        "resume-ner v2 on endpoint ner: candidate v2-1, stable blue (v1). Now rolled_back, step 2 (canary), "
        "25 % of live traffic when it happened; by look (flow-run/abc).",
        "Verdict unhealthy: server-error-rate worse",
        "- server-error-rate (enforce) unhealthy: candidate 0.04219 vs stable 0.001917, 640.0 / 12000.0 samples "
        "(min 200), e-value 412.5 vs threshold 200.0",
        "- latency-p95 (dry_run) healthy: candidate 0.04219 vs stable 0.001917, 640.0 / 12000.0 samples (min 200), "
        "e-value 0.3 vs threshold 200.0",
        "Details: nerops rollout report ner/v2/1",
    ]
