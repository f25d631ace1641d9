"""Manual verbs and recovery, without the Prefect API: what ``nerops rollout ...`` and ``rollback-model`` call.

a verb, no live owner (or the caller owns it)   take the rollout, apply the verb, release the lease
a verb, a live owner                            queue it in the record; the owner applies it at its next
                                                look; a rollback or abort the owner does not apply within
                                                two looks is applied by taking the rollout over (forced,
                                                recorded in the ledger)
back_to_stable(rollout)                         the endpoint to the rollout's recorded stable state: traffic
                                                and mirror only (no metrics, no registry); a no-op when
                                                traffic is already there
"""

from __future__ import annotations

import time
import uuid
from dataclasses import replace

from nerops.controller.act import Executor, delete_deployment
from nerops.controller.ownership import claim
from nerops.controller.records import RolloutRecord, RolloutRefused, parse_rollout_id
from nerops.controller.run import Controller, apply_command
from nerops.rollout.actions import Command, SetTraffic


def find(ctl: Controller, rollout: str | None) -> RolloutRecord:
    """The named rollout, or the endpoint's running one (or, if none runs, its latest)."""
    if rollout:
        endpoint, version, attempt = parse_rollout_id(rollout)
        return ctl.store.load(endpoint, version, attempt)
    records = ctl.store.all(ctl.endpoint)
    if not records:
        raise RolloutRefused(f"endpoint {ctl.endpoint!r} has had no rollout")
    return ctl.store.running(ctl.endpoint) or records[-1]


def _take(ctl: Controller, record: RolloutRecord, force: str = "") -> RolloutRecord:
    taken, _ = claim(
        ctl.store,
        ctl.gov.ledger,
        endpoint=record.endpoint,
        version=record.version,
        owner=ctl.owner,
        now=ctl.now(),
        lease_s=ctl.lease_s,
        new_attempt=False,
        make_record=_never,
        start_evidence=dict,
        force=force,
    )
    return taken


def _never(attempt: int) -> RolloutRecord:
    raise RolloutRefused("no rollout of this version is running")


def manual(ctl: Controller, cmd: Command, *, rollout: str | None = None, wait_s: float | None = None):
    """Apply ``cmd`` to the rollout: ``(record, lines, how)`` with how ``applied`` / ``applied by the owner`` /
    ``queued`` / ``ended``."""
    record = find(ctl, rollout)
    if record.ended:
        return record, [f"rollout {record.rollout_id} has ended ({record.state['phase']}): nothing to do"], "ended"
    if record.owner == ctl.owner or record.lease_until <= ctl.now():
        return _apply(ctl, _take(ctl, record), cmd)
    queued = {
        "id": uuid.uuid4().hex,
        "verb": cmd.verb,
        "actor": cmd.actor,
        "reason": cmd.reason,
        "indefinitely": cmd.indefinitely,
        "full": cmd.full,
        "queued": ctl.now(),
    }
    ctl.store.queue(record, queued)
    deadline = time.monotonic() + (wait_s if wait_s is not None else 2 * ctl.plan.interval + 5)
    while time.monotonic() < deadline:
        time.sleep(min(0.5, ctl.plan.interval / 2))
        current = ctl.store.load(record.endpoint, record.version, record.attempt)
        if all(c.get("id") != queued["id"] for c in current.pending):
            return current, [f"{cmd.verb}: applied by the owner {current.owner}"], "applied by the owner"
    if cmd.verb in ("rollback", "abort"):
        why = f"the owner {record.owner} did not apply a manual {cmd.verb} in time"
        taken = _take(ctl, ctl.store.load(record.endpoint, record.version, record.attempt), force=why)
        return _apply(ctl, replace(taken, pending=()), cmd, applied=frozenset({queued["id"]}))
    return record, [f"{cmd.verb}: queued for the owner {record.owner}, applied at its next look"], "queued"


def _apply(ctl: Controller, record: RolloutRecord, cmd: Command, applied: frozenset[str] = frozenset()):
    record, lines = apply_command(ctl, record, cmd, applied)
    if not record.ended:  # hand the rollout back: a flow or the health sweep may go on at once
        record = ctl.store.save(record, now=ctl.now(), lease_s=0.0)
    return record, lines, "applied"


def back_to_stable(ctl: Controller, rollout: str) -> tuple[RolloutRecord, list[str]]:
    """Bring the endpoint to the rollout's recorded stable state (idempotent; after a crash)."""
    record = find(ctl, rollout)
    if not record.ended:
        record, lines, _ = manual(
            ctl, Command("abort", ctl.owner, "rollback-model: back to the stable state"), rollout=rollout, wait_s=0.0
        )
        if not record.ended:  # a live owner holds it: take it over, the caller asked for stable now
            taken = _take(ctl, record, force="rollback-model asked for the stable state")
            record, lines = apply_command(ctl, taken, Command("abort", ctl.owner, "rollback-model: crash recovery"))
        return record, lines
    weight = 100 if record.state["phase"] == "promoted" else 0
    line = Executor(ctl.control, ctl.gov, ctl.store, record, reason=f"rollback-model {rollout}").set_traffic(
        SetTraffic(weight, 0, None)
    )
    return record, [line]


def previous_champion(ctl: Controller) -> str | None:
    """The champion before the current one, from the ledger's history (never "the newest prod tag")."""
    from nerops.decisions import CHAMPION_KINDS, replay

    entries = [e for e in ctl.gov.ledger.entries() if e.subject.get("model") == ctl.gov.model]
    champions: list[str] = []
    for i, entry in enumerate(entries):
        if entry.kind in CHAMPION_KINDS:
            now = replay(entries[: i + 1]).champion
            if now and (not champions or champions[-1] != now):
                champions.append(now)
    return champions[-2] if len(champions) >= 2 else None


def rollback_to(ctl: Controller, to: str, reason: str) -> list[str]:
    """Production back to ``to`` (``previous``: the previous champion, or a stage=prod version), no retraining.

    Needs only the ledger and the endpoint (which serves from verified local copies): not the registry,
    not the metrics. The champion moves by a ``rollback`` ledger entry (compare-and-append on the champion).
    """
    from nerops.ledger import Entry
    from nerops.serving.port import Change

    state = ctl.gov.state()
    current = state.champion
    target = previous_champion(ctl) if to == "previous" else to.removeprefix("v")
    if target is None:
        raise RolloutRefused("the ledger has no previous champion to roll back to")
    if target == current:
        return [f"v{target} is the champion already: nothing to do"]
    if state.stage(target) != "prod":
        why = f"stage={state.stage(target)}" + (f" ({state.archived[target]})" if target in state.archived else "")
        raise RolloutRefused(f"v{target} is {why}: only a stage=prod version can take traffic (reinstate it first?)")
    running = ctl.store.running(ctl.endpoint)
    if running is not None:
        raise RolloutRefused(f"rollout {running.rollout_id} is running: roll it back with `nerops rollout rollback`")
    change = Change(ctl.owner, reason, f"rollback-to-v{target}")
    view = ctl.control.read().state
    serving = [n for n, spec in view["deployments"].items() if str(spec["model_version"]) == target]
    lines = []
    if serving:
        name = serving[0]
    else:
        name = f"v{target}-rollback"
        ctl.control.begin_create_deployment(name, target, instance_count=ctl.plan.instances, change=change)
        ctl.control.wait_deployment(name, deadline_s=300)
        lines.append(f"deployed v{target} as {name} (from the endpoint's verified local copy)")
    old = [n for n, w in view.get("traffic", {}).items() if w and n != name]
    ctl.control.set_traffic({name: 100, **{n: 0 for n in old}}, {}, if_match=ctl.control.read().etag, change=change)
    lines.append(f"traffic {{{name}: 100}}")

    def check(entries: list[Entry]) -> Entry | None:
        from nerops.decisions import replay

        now = replay(e for e in entries if e.subject.get("model") == ctl.gov.model).champion
        if now != current:
            raise RolloutRefused(f"the champion moved from v{current} to v{now} meanwhile: look again")
        return None

    entry = ctl.gov.ledger.append(
        "rollback",
        subject={"model": ctl.gov.model, "version": current, "endpoint": ctl.endpoint},
        evidence={"archived": "rolled_back", "to_version": target, "reason": reason, "deployment": name},
        actor=ctl.owner,
        check=check,
    )
    lines.append(f"ledger entry {entry.seq}: v{current} archived (rolled_back), champion v{target}")
    for deployment in old:
        lines.append(delete_deployment(ctl.control, deployment, change))
    try:
        ctl.gov.apply(ctl.gov.state(), [current, target])
    except Exception as exc:  # the registry may be down: the ledger holds the truth, reconcile catches up
        lines.append(f"registry behind the ledger ({type(exc).__name__}): `nerops reconcile` applies it")
    return [line for line in lines if line]
