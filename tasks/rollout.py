"""Tasks of the rollout flows: thin wrappers over :mod:`nerops.controller.run` (plain values in and out)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.input import RunInput
from pydantic import Field

from nerops.controller.factory import controller, record_store
from nerops.controller.ownership import check_claimable
from nerops.controller.records import OwnershipLost, RolloutRefused, parse_rollout_id
from nerops.controller.run import begin, look
from tasks.common import actor, transient_only


@task(cache_policy=NO_CACHE)
def begin_rollout(version: str, endpoint: str | None, new_attempt: bool, approval: bool = False) -> dict:
    """Deploy the candidate at 0 % (or resume the rollout of this version): the rollout record."""
    ctl = controller(endpoint, actor())
    resolved = ctl.gov.resolve(version)
    record, how = begin(ctl, resolved, new_attempt=new_attempt, approval=approval)
    return {
        "rollout": record.rollout_id,
        "how": how,
        "interval": ctl.plan.interval,
        "steps": [s.label for s in ctl.plan.steps],
        "candidate": record.candidate,
        "stable": record.stable,
    }


@task(cache_policy=NO_CACHE)
def preflight(version: str, endpoint: str | None) -> dict:
    """Refuse at once (before waiting on the concurrency limit) a rollout another owner is running."""
    ctl = controller(endpoint, actor(), metrics=False)
    resolved = ctl.gov.resolve(version)
    check_claimable(ctl.store, endpoint=ctl.endpoint, version=resolved, owner=ctl.owner, now=ctl.now())
    return {
        "endpoint": ctl.endpoint,
        "version": resolved,
        "interval": ctl.plan.interval,
        "lease_file": str(ctl.store.folder(ctl.endpoint) / ".prefect-lease.json"),
    }


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1, retry_condition_fn=transient_only)
def take_look(rollout: str) -> dict:
    """One look of the judge, one step of the state machine, its evidence and its actions.

    ``{"lost": why}`` when another owner holds the rollout now (it took it over): stop without touching it.
    """
    endpoint, version, attempt = parse_rollout_id(rollout)
    ctl = controller(endpoint, actor())
    try:
        record, verdict, done = look(ctl, ctl.store.load(endpoint, version, attempt))
    except OwnershipLost as exc:
        return {"lost": str(exc)}
    state = record.state
    return {
        "phase": state["phase"],
        "step": state["step"],
        "weight": state["weight"],
        "frozen": state.get("frozen"),
        "verdict": verdict.status,
        "reason": verdict.reason,
        "ending": state.get("ending", ""),
        "weights": state.get("weights"),
        "done": done,
        "steps": len(ctl.plan.steps),
        "kind": ctl.plan.steps[state["step"]].kind,
        "candidate": record.candidate,
        "stable": record.stable,
    }


def probe_sender(endpoint: str | None):
    """The probe sender of the endpoint's rollouts when the profile sends probes (None: it sends none); not
    started. Its resumes are read now, so a bad ``probes.folder`` refuses the rollout before it begins."""
    from nerops.controller.probes import Prober, probe_texts
    from nerops.dataset import resolve_zips
    from nerops.errors import NeropsError
    from nerops.settings import get_settings

    ctl = controller(endpoint, actor(), metrics=False)
    probes = ctl.plan.probes
    if probes is None:
        return None
    try:
        default = None if probes.folder else resolve_zips(get_settings())[1]  # the test CVs
        texts = probe_texts(probes, default)
    except (NeropsError, OSError) as exc:
        raise RolloutRefused(f"probe traffic of profile {ctl.plan.profile}: {exc}") from exc
    return Prober(ctl.control.url, ctl.control.key, texts, probes)


@task(cache_policy=NO_CACHE)
def give_up_rollout(rollout: str, why: str) -> str:
    """This run must stop (its concurrency lease is gone): end its claim now so the next owner need not wait."""
    endpoint, version, attempt = parse_rollout_id(rollout)
    ctl = controller(endpoint, actor(), metrics=False)
    record = ctl.store.load(endpoint, version, attempt)
    try:
        ctl.store.give_up(record, now=ctl.now())
    except OwnershipLost as exc:
        return str(exc)
    return f"rollout {rollout}: {ctl.owner} stopped ({why}); the health sweep or the next run takes it over"


def read_record(rollout: str) -> dict:
    endpoint, version, attempt = parse_rollout_id(rollout)
    return record_store().load(endpoint, version, attempt).to_dict()


@task(cache_policy=NO_CACHE)
def bring_back_to_stable(rollout: str, reason: str) -> list[str]:
    """A rollout's endpoint back to its recorded stable state (idempotent)."""
    from nerops.controller.manual import back_to_stable

    endpoint, _, _ = parse_rollout_id(rollout)
    ctl = controller(endpoint, actor(), metrics=False)
    record, lines = back_to_stable(ctl, rollout)
    return [f"rollout {record.rollout_id}: {record.state['phase']}", *lines]


@task(cache_policy=NO_CACHE)
def roll_production_back(to: str, endpoint: str | None, reason: str) -> list[str]:
    """Production back to the previous champion or a named stage=prod version, without retraining."""
    from nerops.controller.manual import rollback_to

    return rollback_to(controller(endpoint, actor(), metrics=False), to, reason)


@task(cache_policy=NO_CACHE)
def sweep_endpoint(endpoint: str | None) -> dict:
    """Alert rules for the live deployments; a rollout without a live owner taken over and driven to its end."""
    from nerops.controller.sweep import sweep

    ctl = controller(endpoint, actor())
    report = sweep(ctl)
    released = ""
    if report.rollout_action.startswith("taken over"):  # its dead owner's concurrency slot goes too
        from tasks.fence import release_left_behind

        released = release_left_behind(ctl.store.folder(ctl.endpoint) / ".prefect-lease.json")
    rows = [
        {"rule": r.rule, "deployment": r.deployment, "label": r.label, "state": r.state, "message": r.message}
        for r in report.results
    ]
    return {
        "endpoint": report.endpoint,
        "rows": rows,
        "firing": report.firing,
        "recorded": report.recorded,
        "rollout": report.rollout,
        "rollout_action": report.rollout_action,
        "rollout_phase": report.rollout_phase,
        "released": released,
    }


@task(cache_policy=NO_CACHE)
def refresh_dashboard(endpoint: str) -> str:
    """Write the monitoring dashboard again (the page the on-call engineer opens)."""
    from nerops.reporting import write_monitoring_dashboard
    from nerops.settings import get_settings

    return str(write_monitoring_dashboard(get_settings(), endpoint=endpoint))


class RolloutApproval(RunInput):
    """The approval a ``progressive-rollout`` run with ``approval=true`` waits for, sent as the run's input:
    ``RolloutApproval(approver="ops@example.com", reason="...").send_to(flow_run_id)`` (any Prefect client)."""

    approver: str = Field(min_length=1, max_length=200)
    reason: str = Field(min_length=1, max_length=500)


APPROVAL_KEY_PREFIX = "rolloutapproval-auto"  # what RunInput.send_to names this class's inputs


def approvals_sent(flow_run_id: str, seen: set[str]) -> list[tuple[str, RolloutApproval]]:
    """Approvals sent to this flow run as its input that it has not applied yet: (key, approval)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        inputs = client.filter_flow_run_input(flow_run_id, APPROVAL_KEY_PREFIX, 20, seen)
    return [(item.key, RolloutApproval.model_validate_json(item.value)) for item in inputs]


@task(cache_policy=NO_CACHE)
def approve_rollout(rollout: str, approver: str, reason: str) -> list[str]:
    """Apply an approval this flow run received (it owns the rollout): the step it waited before begins."""
    from nerops.controller.manual import manual
    from nerops.rollout.actions import Command

    endpoint, _, _ = parse_rollout_id(rollout)
    ctl = controller(endpoint, actor())
    record, lines, how = manual(ctl, Command("approve", f"{approver} (flow-run input)", reason), rollout=rollout)
    return [*lines, f"rollout {record.rollout_id}: {record.state['phase']} at {record.state['weight']} % ({how})"]
