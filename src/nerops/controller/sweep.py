"""The health sweep: alert rules for every live deployment, and a rollout whose owner is gone.

every live deployment    evaluate the standalone alert rules; a change in what fires is an ``alerts``
                         ledger entry (not one per sweep)
a rollout, live owner    told only (an ``alerts`` entry naming the rollout): its own judge decides, so
                         the sweep adds no repeated-look false alarms
a rollout, lease expired taken over (``rollout_owner``) and driven look by look with the same judge
                         until it ends (resumed, or rolled back)
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from nerops.controller.records import RolloutRecord
from nerops.controller.run import Controller, begin, look
from nerops.ledger import Entry


@dataclass
class SweepReport:
    endpoint: str
    results: list = field(default_factory=list)  # RuleResult
    firing: list[str] = field(default_factory=list)
    recorded: int | None = None  # the ledger entry of a change in what fires
    rollout: str | None = None
    rollout_action: str = ""
    rollout_phase: str = ""


def _last_alerts(ctl: Controller) -> list[str] | None:
    entries = [e for e in ctl.gov.ledger.find(kind="alerts") if e.subject.get("endpoint") == ctl.endpoint]
    return sorted(entries[-1].evidence.get("firing", [])) if entries else None


def sweep(ctl: Controller, *, rules=None, drive_limit_s: float | None = None) -> SweepReport:
    """One sweep of ``ctl.endpoint`` (see the module docstring)."""
    from nerops.telemetry.alerts import evaluate, load_rules, standalone
    from nerops.telemetry.source import judgeable_now

    report = SweepReport(ctl.endpoint)
    live = [n for n, w in ctl.control.read().state.get("traffic", {}).items() if w]
    now = judgeable_now(ctl.source, ctl.endpoint, ctl.now()) if ctl.source is not None else ctl.now()
    chosen = standalone(rules if rules is not None else load_rules())
    report.results = evaluate(chosen, ctl.source, now=now, deployments=live, endpoint=ctl.endpoint) if live else []
    report.firing = sorted(
        f"{r.rule}@{r.deployment}" + (f"[{r.label}]" if r.label else "") for r in report.results if r.state == "firing"
    )
    running = ctl.store.running(ctl.endpoint)
    report.rollout = running.rollout_id if running else None
    if report.firing != (_last_alerts(ctl) or []):
        report.recorded = _record(ctl, report, running).seq
    if running is None:
        return report
    if running.lease_until > ctl.now():
        report.rollout_action = f"owned by {running.owner}: told, not taken over (its judge decides)"
        report.rollout_phase = running.state["phase"]
        return report
    record, how = begin(ctl, running.version)
    report.rollout_action = f"{how} from {running.owner} (lease expired)"
    record = _drive(ctl, record, drive_limit_s)
    report.rollout_phase = record.state["phase"]
    return report


def _record(ctl: Controller, report: SweepReport, running: RolloutRecord | None) -> Entry:
    subject = {"model": ctl.gov.model, "endpoint": ctl.endpoint}
    if running is not None:
        subject["rollout"] = running.rollout_id
    evidence = {
        "firing": report.firing,
        "previous": _last_alerts(ctl) or [],
        "messages": [r.message for r in report.results if r.state == "firing"][:20],
    }
    return ctl.gov.ledger.append("alerts", subject=subject, evidence=evidence, actor=ctl.owner)


def _drive(ctl: Controller, record: RolloutRecord, limit_s: float | None) -> RolloutRecord:
    deadline = time.monotonic() + (limit_s if limit_s is not None else 24 * 3600)
    next_look = time.monotonic()
    while not record.ended and time.monotonic() < deadline:
        next_look += ctl.plan.interval
        time.sleep(max(0.0, next_look - time.monotonic()))
        record, _, _ = look(ctl, record)
    return record
