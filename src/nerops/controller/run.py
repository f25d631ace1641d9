"""The procedures the flows and the CLI call: begin a rollout, take one look, apply a manual verb, and bring
an endpoint back to a rollout's stable state. Plain functions over a :class:`Controller` (no Prefect here).

One look: carry out what the last owner saved in the record's outbox but did not live to do, and make
the endpoint match the record -> judge (or, at readiness, the smoke answers) -> ``advance`` -> the
evidence line -> save the record as its owner with the step's actions as its outbox (the lease renewed;
:class:`OwnershipLost` stops a controller that lost it) -> carry out the actions in order, then clear the
outbox -> ``rollout_finished`` once the rollout has ended.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace

from nerops.controller import evidence
from nerops.controller.act import Executor
from nerops.controller.observe import look_at, smoke
from nerops.controller.ownership import claim, once, subject
from nerops.controller.records import OwnershipLost, RecordStore, RolloutRecord, RolloutRefused
from nerops.governance import Governance
from nerops.ledger import Entry
from nerops.rollout.actions import Command, SetTraffic, action_from_dict, action_to_dict
from nerops.rollout.judge import judge
from nerops.rollout.machine import advance, command, start, traffic_of
from nerops.rollout.plan import Plan
from nerops.rollout.readiness import smoke_verdict
from nerops.rollout.verdicts import Look, Verdict
from nerops.serving.port import Change
from nerops.telemetry.source import MetricsSource


@dataclass
class Controller:
    gov: Governance
    store: RecordStore
    control: object  # EndpointControl with ``url`` and ``key`` for scoring (EndpointClient)
    source: MetricsSource | None
    plan: Plan
    policy_text: str
    owner: str
    endpoint: str
    lease_s: float = 60.0
    clock: object = field(default=time.time)
    telemetry: object | None = None  # the writer of the controller's own metrics (None: it writes none)

    def now(self) -> float:
        return float(self.clock())  # type: ignore[operator]


def stable_deployment(state: dict) -> tuple[str, str] | None:
    """The deployment taking the most live traffic and its version (None: nothing serves)."""
    traffic = {k: v for k, v in state.get("traffic", {}).items() if v}
    if not traffic:
        return None
    name = max(traffic, key=lambda k: (traffic[k], k))
    return name, str(state["deployments"][name]["model_version"])


def begin(
    ctl: Controller, version: str, *, new_attempt: bool = False, labels: tuple[str, ...] = (), approval: bool = False
):
    """Start (deploy the candidate at 0 %) or resume the endpoint's rollout of ``version``.

    ``approval``: a new rollout waits for an approval before the plan's approval step (a resumed one keeps its own).
    """
    if approval and ctl.plan.approval is None:
        raise RolloutRefused(f"profile {ctl.plan.profile!r} has no approval step: add 'approval' to it in the policy")
    model = ctl.gov.state()
    if model.stage(version) != "prod":
        raise RolloutRefused(f"v{version} is stage={model.stage(version)}: only a stage=prod version is rolled out")
    verdict, against = model.gate_results.get(version, ("none", None))
    view = ctl.control.read()
    serving = stable_deployment(view.state)
    if serving is None:
        raise RolloutRefused(f"endpoint {ctl.endpoint!r} serves nothing: make a first deployment first")
    now = ctl.now()

    def make(attempt: int) -> RolloutRecord:
        if verdict != "pass" or against != model.champion:
            raise RolloutRefused(
                f"v{version}'s gate pass was against champion {against or 'none'}, the champion is now "
                f"{model.champion or 'none'}: gate it again (nerops gate {version}) before rolling it out"
            )
        state, actions = start(
            ctl.plan,
            endpoint=ctl.endpoint,
            version=version,
            attempt=attempt,
            candidate=f"v{version}-{attempt}",
            stable=serving[0],
            now=now,
            approval=approval,
        )
        return RolloutRecord(
            ctl.endpoint,
            ctl.gov.model,
            version,
            attempt,
            f"v{version}-{attempt}",
            serving[0],
            serving[1],
            ctl.plan.profile,
            ctl.plan.policy_sha256,
            ctl.owner,
            now + ctl.lease_s + ctl.plan.steps[0].deadline,  # the candidate's start may take that long
            created=now,
            updated=now,
            labels=labels,
            outbox=tuple(action_to_dict(a) for a in actions),
        ).with_machine(state)

    def started(record: RolloutRecord) -> dict:
        return {
            "attempt": record.attempt,
            "candidate": record.candidate,
            "stable": record.stable,
            "stable_version": record.stable_version,
            "champion": model.champion,
            "profile": ctl.plan.profile,
            "steps": [s.label for s in ctl.plan.steps],
            "policy_sha256": ctl.plan.policy_sha256,
            "policy": ctl.policy_text,
        }

    record, how = claim(
        ctl.store,
        ctl.gov.ledger,
        endpoint=ctl.endpoint,
        version=version,
        owner=ctl.owner,
        now=now,
        lease_s=ctl.lease_s,
        new_attempt=new_attempt,
        make_record=make,
        start_evidence=started,
    )
    if how == "started":
        change = Change(ctl.owner, f"candidate of rollout {record.rollout_id}", record.rollout_id)
        try:
            ctl.control.begin_create_deployment(
                record.candidate, version, instance_count=ctl.plan.instances_for(0), change=change
            )
            ctl.control.wait_deployment(record.candidate, deadline_s=ctl.plan.steps[0].deadline)
        except Exception as exc:  # not the model's verdict: the rollout ends aborted, the version stays prod
            why = f"the candidate deployment could not be created: {type(exc).__name__}: {exc}"[:300]
            apply_command(ctl, record, Command("abort", ctl.owner, why))
            raise RolloutRefused(f"rollout {record.rollout_id} aborted: {why}") from exc
        _, actions = start(
            ctl.plan,
            endpoint=ctl.endpoint,
            version=version,
            attempt=record.attempt,
            candidate=record.candidate,
            stable=record.stable,
            now=now,
        )
        Executor(ctl.control, ctl.gov, ctl.store, record).run(actions)
        record = ctl.store.save(replace(record, outbox=()), now=ctl.now(), lease_s=ctl.lease_s)
    return record, how


def drain_outbox(ctl: Controller, record: RolloutRecord) -> tuple[RolloutRecord, list[str]]:
    """Carry out the actions an owner saved with its last step but did not live to finish (each idempotent)."""
    if not record.outbox:
        return record, []
    lines = Executor(ctl.control, ctl.gov, ctl.store, record).run(tuple(action_from_dict(a) for a in record.outbox))
    record = ctl.store.save(replace(record, outbox=()), now=ctl.now(), lease_s=ctl.lease_s)
    return record, [f"carried out what the last owner left undone: {line}" for line in lines]


def look(ctl: Controller, record: RolloutRecord) -> tuple[RolloutRecord, Verdict, list[str]]:
    """One look of the judge and one step of the machine, with its evidence and its actions."""
    # renew first: a controller that lost the rollout stops here, before it touches the endpoint
    if record.owner != ctl.owner:
        raise OwnershipLost(
            f"rollout {record.rollout_id} is owned by {record.owner} now, not by {ctl.owner}: "
            "stopping without touching it"
        )
    record = ctl.store.save(record, now=ctl.now(), lease_s=ctl.lease_s)
    record, redone = drain_outbox(ctl, record)
    if record.ended:  # a look after the end (a retry after a failed action): make the ending's traffic true
        weight = 100 if record.state["phase"] == "promoted" else 0
        line = Executor(ctl.control, ctl.gov, ctl.store, record).set_traffic(SetTraffic(weight, 0, None))
        return (
            record,
            Verdict("healthy", f"ended ({record.state['phase']}): {line}", ctl.now(), None, 0.0),
            [
                *redone,
                line,
            ],
        )
    for queued in record.pending:  # manual verbs left by the CLI for the owner: first
        record, _ = apply_command(ctl, record, command_of(queued), applied=frozenset({queued["id"]}))
        if record.ended:
            return record, Verdict("healthy", f"ended by {queued['verb']}", ctl.now(), None, ctl.plan.interval), []
    machine = record.machine
    # the record is saved before its actions: an owner that died in between left the endpoint behind it
    executor = Executor(ctl.control, ctl.gov, ctl.store, record, reason=f"rollout {record.rollout_id}: catching up")
    caught_up = redone + [
        line for line in executor.run(traffic_of(ctl.plan, machine)) if not line.startswith("traffic already")
    ]
    now = ctl.now()
    step = ctl.plan.steps[machine.step]
    answered: dict = {}
    if step.kind == "readiness" and machine.phase == "progressing":
        statuses = smoke(ctl.control.url, ctl.control.key, record.candidate, step.smoke_requests)
        # the look ends when the smoke requests are answered (a worker loading a model may take many seconds):
        # the next step's bake and deadline count from the moment its traffic moves, not from before the wait
        now = ctl.now()
        verdict = smoke_verdict(statuses, required=step.smoke_requests, now=now, interval=ctl.plan.interval)
    elif ctl.source is None:
        verdict = Verdict("error", "no metrics source configured", now, None, ctl.plan.interval)
    else:
        seen = look_at(ctl.source, ctl.control.read().state, record, ctl.plan, now)
        verdict = judge(seen, ctl.plan)
        answered = requests_answered(seen)
    new, actions = advance(ctl.plan, machine, verdict, now)
    what = {"look": verdict.to_dict(), **({"caught_up": caught_up} if caught_up else {})}
    if answered:
        what["answered"] = answered
    record, done = _commit(ctl, record, new, actions, what, now)
    return record, verdict, caught_up + done


def requests_answered(seen: Look) -> dict:
    """Requests each arm answered since the rollout began, per traffic class (what a report needs once the
    telemetry is gone: the candidate's live requests are the blast radius)."""
    out = {}
    for cls, series in seen.series.items():
        counts = {"candidate": 0, "stable": 0}
        for row in series.rows:
            arm = "candidate" if row.arm == seen.candidate else "stable" if row.arm == seen.stable else None
            if arm:
                counts[arm] += int(row.requests)
        out[cls] = counts
    return out


def _commit(ctl: Controller, record: RolloutRecord, new, actions, what: dict, now: float, applied=frozenset()):
    lines, sha = evidence.append(
        ctl.store.evidence_path(record),
        {
            "time": now,
            "rollout": record.rollout_id,
            "owner": ctl.owner,
            "step": new.step,
            "phase": new.phase,
            "weight": new.weight,
            "frozen": new.frozen,
            **what,
        },
    )
    outbox = tuple(action_to_dict(a) for a in actions)  # saved with the step: a successor finishes them
    record = replace(record.with_machine(new), evidence_lines=lines, evidence_sha256=sha, outbox=outbox)
    record = ctl.store.save(record, now=now, lease_s=ctl.lease_s, applied=applied)
    from nerops.controller.telemetry import record_step

    record_step(ctl, record, now)  # the controller's own metrics (phase, weight, time): never fails the step
    from nerops.controller.notify import announce

    try:
        lines_done = Executor(ctl.control, ctl.gov, ctl.store, record).run(actions)
    finally:  # after the traffic moved (a rollback does not wait on Prefect); sent even when an action failed
        announce(record, actions, what, now)  # nerops.rollout.* events (rolled back, frozen...): never raises
    if outbox:
        record = ctl.store.save(replace(record, outbox=()), now=ctl.now(), lease_s=ctl.lease_s)
    if new.ended:
        finish(ctl, record)
    return record, lines_done


def finish(ctl: Controller, record: RolloutRecord) -> Entry:
    """``rollout_finished`` (once): the phase, why, and the evidence file's sha256."""

    lines, sha = evidence.digest(ctl.store.evidence_path(record))
    return ctl.gov.ledger.append(
        "rollout_finished",
        subject=subject(record),
        actor=ctl.owner,
        check=once("rollout_finished", record.rollout_id),
        evidence={
            "phase": record.state["phase"],
            "ending": record.state.get("ending", ""),
            "weights": record.state.get("weights"),
            "evidence_lines": lines,
            "evidence_sha256": sha,
        },
    )


def command_of(queued: dict) -> Command:
    return Command(
        queued["verb"], queued["actor"], queued["reason"], bool(queued.get("indefinitely")), bool(queued.get("full"))
    )


def apply_command(ctl: Controller, record: RolloutRecord, cmd: Command, applied: frozenset[str] = frozenset()):
    """A manual verb as this controller (the caller holds or has just taken the rollout)."""
    record, _ = drain_outbox(ctl, record)
    now = ctl.now()
    new, actions = command(ctl.plan, record.machine, cmd, now)
    if new == record.machine and not actions:
        if applied:
            record = ctl.store.save(record, now=now, lease_s=ctl.lease_s, applied=applied)
        return record, [f"{cmd.verb}: nothing to do (rollout is {new.phase})"]
    said = {"command": {"verb": cmd.verb, "actor": cmd.actor, "reason": cmd.reason}}
    return _commit(ctl, record, new, actions, said, now, applied)
