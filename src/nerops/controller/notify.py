"""Notifications: the Prefect events a committed step sends, for automations (a Slack message, a page).

    events_for(after, actions, record, step, now) -> [RolloutEvent]   pure: what one committed step announces
    emit(events) -> int                                                prefect.events.emit_event; never raises
    announce(record, actions, step, now)                               the call in run._commit, after the save

    nerops.rollout.rolled-back       the rollout ended rolled back (unhealthy, a deadline whose default is rollback,
                                     ``nerops rollout rollback``)
    nerops.rollout.aborted           it ended aborted (a deadline, a manual abort, a candidate that could not start)
    nerops.rollout.promoted          it ended promoted
    nerops.rollout.frozen            traffic frozen: the metrics source failed (once per freeze)
    nerops.rollout.deadline-reached  a look found a wait past its deadline: a step's, a pause's or an approval's
                                     (``payload.deadline``: which, and what followed); an ending follows it

Resource ``nerops.rollout.<rollout id>`` (labels ``nerops.endpoint``, ``nerops.model``, ``nerops.version``);
related: the candidate's model version, the stable one, the endpoint, and (Prefect adds them inside a run) the
flow run, flow, task run and deployment. The payload says why: ``summary``, ``reason``, phase, step, weights, who,
and the look's verdict with its metrics (values, samples, e-value and threshold).

Events are derived once the step is saved (an event never announces a step that did not happen), from the state
after it, its actions and the evidence line (``look`` or ``command``): after the save, ``_commit`` holds no earlier
state, and the machine's actions and wording say what happened (a deadline is told only of a look: a person's verb
is a decision, whatever its reason says). The weight when it happened comes from the weights history.

Sending never fails the step, and inside a Prefect run (the flows) it adds no wait: ``emit_event`` queues to
Prefect's events worker, which sends to the run's API and adds the run's resources. Outside a run (the CLI), events
go only to a configured API that answers ``/health`` within ``PROBE_TIMEOUT_S`` (without one, Prefect would start a
temporary server for them, or retry a dead one for seconds at exit); the first event in such a process also pays
the Prefect import (about 2 s here). Anything else is a warning in the log: the decision is saved, the event is news.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from typing import NamedTuple

from nerops.controller.records import RolloutRecord
from nerops.rollout.actions import Record
from nerops.rollout.machine import RolloutState
from nerops.rollout.verdicts import PRECEDENCE

log = logging.getLogger("nerops.controller")
PREFIX = "nerops.rollout."
ENDINGS = {"rolled_back": "rolled-back", "aborted": "aborted", "promoted": "promoted"}
METRIC_KEYS = ("metric", "status", "mode", "candidate", "stable", "candidate_samples", "stable_samples")
METRIC_KEYS += ("min_samples", "tested", "e_value", "threshold", "reason")
MAX_METRICS, MAX_TEXT = 6, 1000
PROBE_TIMEOUT_S, PROBE_TTL_S = 1.0, 30.0
_probes: dict[str, tuple[float, str | None]] = {}  # api url -> (when, why it is unusable; None: it answered)


class RolloutEvent(NamedTuple):
    event: str
    resource: dict[str, str]
    payload: dict
    related: list[dict[str, str]]
    id: uuid.UUID


def _text(value: object) -> str:
    return str(value or "")[:MAX_TEXT]


def _short(value: object) -> object:
    """Floats to 4 significant digits (a message, not the evidence: that stays in the evidence file)."""
    return float(f"{value:.4g}") if isinstance(value, float) else _text(value) if isinstance(value, str) else value


def verdict_summary(look: dict | None) -> dict | None:
    """A look's verdict as a message needs it: status, reason, window, and its worst metrics first."""
    if not look:
        return None
    metrics = sorted(
        look.get("metrics", ()),
        key=lambda m: (
            PRECEDENCE.index(m["status"]) if m.get("status") in PRECEDENCE else 0,
            m.get("mode") != "enforce",
        ),
    )
    return {
        "status": look.get("status"),
        "reason": _text(look.get("reason")),
        "window": look.get("window"),
        "hard_failures": list(look.get("hard_failures", ()))[:MAX_METRICS],
        "problems": [_text(p) for p in look.get("problems", ())][:MAX_METRICS],
        "metrics": [{k: _short(m.get(k)) for k in METRIC_KEYS} for m in metrics[:MAX_METRICS]],
        "metrics_omitted": max(len(metrics) - MAX_METRICS, 0),
    }


def _deadline(after: RolloutState, notes: dict[str, str], step: dict) -> dict | None:
    """Which wait a look found past its deadline, in the machine's own words (only that transition writes them)."""
    if "look" not in step:  # a person's verb is a decision, not a deadline (whatever its reason says)
        return None
    outcome = after.phase if after.ended else "continued"
    if " reached its deadline with verdict " in after.ending:
        return {"kind": "step", "outcome": outcome, "text": _text(after.ending)}
    paused = after.ending if after.ended else notes.get("resumed", "")
    if "the pause reached its deadline" in paused:
        return {"kind": "pause", "outcome": outcome if after.ended else "resumed", "text": _text(paused)}
    approval = after.ending if after.ended else notes.get("approved", "")
    if "no approval within " in approval:
        return {"kind": "approval", "outcome": outcome, "text": _text(approval)}
    return None


def events_for(after: RolloutState, actions: Iterable, record: RolloutRecord, step: dict, now: float):
    """The events of one committed step of ``record`` (``after``: its state now; ``step``: the evidence line's
    ``look`` or ``command``), in the order they happened: a deadline, then the ending it led to."""
    notes = {a.kind: a.summary for a in actions if isinstance(a, Record)}
    weights = list(after.weights)
    ended_at = after.ended and after.phase != "promoted" and len(weights) > 1 and weights[-1] == 0
    at = weights[-2] if ended_at else after.weight
    command = step.get("command") or {}
    base = {
        "rollout": record.rollout_id,
        "endpoint": record.endpoint,
        "model": record.model,
        "version": record.version,
        "attempt": record.attempt,
        "candidate": record.candidate,
        "stable": record.stable,
        "stable_version": record.stable_version,
        "profile": record.profile,
        "phase": after.phase,
        "step": after.step,
        "step_kind": after.steps[-1].kind if after.steps else None,
        "weight": after.weight,
        "weight_at": at,  # the candidate's weight when it happened (an ending sets 0)
        "weights": weights,
        "by": "command" if command else "look",
        "actor": command.get("actor") or record.owner,
        "command": command.get("verb"),
        "time": now,
        "evidence_line": record.evidence_lines,
        "last_verdict": after.last_verdict,
        "verdict": verdict_summary(step.get("look")),
    }
    rid = record.rollout_id
    found: list[tuple[str, str, str, dict]] = []
    deadline = _deadline(after, notes, step)
    if deadline:
        said = f"{rid}: the {deadline['kind']} deadline was reached ({deadline['outcome']})"
        found.append(("deadline-reached", deadline["text"], said, {"deadline": deadline}))
    if "frozen" in notes:
        found.append(("frozen", _text(after.frozen), f"{rid}: traffic frozen at {after.weight} %", {}))
    if after.ended and after.phase in notes:
        said = f"{rid} {after.phase.replace('_', ' ')}" + ("" if after.phase == "promoted" else f" at {at} %")
        found.append((ENDINGS[after.phase], _text(after.ending), said, {}))
    return [
        _event(name, record, {**base, **extra, "reason": why, "summary": f"{said}: {why}"})
        for name, why, said, extra in found
    ]


def _event(name: str, record: RolloutRecord, payload: dict) -> RolloutEvent:
    rid = record.rollout_id
    resource = {
        "prefect.resource.id": f"{PREFIX}{rid}",
        "prefect.resource.name": rid,
        "nerops.endpoint": record.endpoint,
        "nerops.model": record.model,
        "nerops.version": str(record.version),
    }
    related = [_version(record.model, record.version, "model-version"), _endpoint(record.endpoint)]
    if record.stable_version:
        related.insert(1, _version(record.model, record.stable_version, "stable-model-version"))
    seed = f"{rid}|{record.created}|{record.evidence_lines}|{name}"  # one id per step and event: resent, not doubled
    return RolloutEvent(PREFIX + name, resource, payload, related, uuid.uuid5(uuid.NAMESPACE_URL, seed))


def _version(model: str, version: str, role: str) -> dict[str, str]:
    return {
        "prefect.resource.id": f"nerops.model-version.{model}.{version}",
        "prefect.resource.role": role,
        "prefect.resource.name": f"{model} v{version}",
    }


def _endpoint(endpoint: str) -> dict[str, str]:
    return {"prefect.resource.id": f"nerops.endpoint.{endpoint}", "prefect.resource.role": "endpoint"}


def unavailable() -> str | None:
    """Why events cannot be sent from here now (None: they can)."""
    from prefect.context import FlowRunContext, TaskRunContext
    from prefect.settings import get_current_settings

    if FlowRunContext.get() or TaskRunContext.get():
        return None  # the run's own API (configured or temporary): the run could not go on without it
    url = get_current_settings().api.url
    if not url:
        server = sys.modules.get("prefect.server.api.server")  # a temporary server this process started already
        running = server is not None and getattr(server.SubprocessASGIServer._instances.get(None), "running", False)
        return None if running else "no Prefect API is configured (PREFECT_API_URL) outside a flow run"
    when, why = _probes.get(url, (0.0, None))
    if time.monotonic() - when > PROBE_TTL_S:
        why = _probe(url)
        _probes[url] = (time.monotonic(), why)
    return why


def _probe(url: str) -> str | None:
    import httpx
    from prefect.settings import get_current_settings

    api = get_current_settings().api
    headers = {"Authorization": f"Bearer {api.key.get_secret_value()}"} if api.key else {}
    auth = tuple(api.auth_string.get_secret_value().split(":", 1)) if api.auth_string else None
    try:
        httpx.get(f"{url.rstrip('/')}/health", headers=headers, auth=auth, timeout=PROBE_TIMEOUT_S).raise_for_status()
        return None
    except Exception as exc:
        return f"the Prefect API at {url} did not answer ({type(exc).__name__}: {str(exc)[:200]})"


def emit(events: Sequence[RolloutEvent]) -> int:
    """Send ``events`` with ``prefect.events.emit_event`` (queued to Prefect's events worker): how many were queued.
    Never raises: a warning names the events that were not sent, and why."""
    if not events:
        return 0
    names = ", ".join(e.event for e in events)
    rid = events[0].payload.get("rollout")
    try:
        why = unavailable()
        if why is not None:
            log.warning("rollout %s: events not sent (%s): %s; the rollout goes on", rid, names, why)
            return 0
        from prefect.events import emit_event

        sent, previous = 0, None
        for e in events:
            done = emit_event(
                e.event, resource=e.resource, related=e.related, payload=e.payload, id=e.id, follows=previous
            )
            sent, previous = sent + (done is not None), done or previous
        return sent
    except Exception as exc:  # the step is decided and saved: a notification must not undo or stop it
        log.warning(
            "rollout %s: events not sent (%s): %s: %s; the rollout goes on", rid, names, type(exc).__name__, exc
        )
        return 0


def announce(record: RolloutRecord, actions: Iterable, step: dict, now: float) -> int:
    """The step's events, sent (``record``: as just saved); never raises."""
    try:
        return emit(events_for(record.machine, tuple(actions), record, step, now))
    except Exception as exc:
        log.warning("rollout %s: events not derived (%s: %s)", record.rollout_id, type(exc).__name__, exc)
        return 0
