"""Tasks of the rollout flows: thin wrappers over :mod:`nerops.controller.run` (plain values in and out)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from nerops.controller.factory import controller, record_store
from nerops.controller.records import parse_rollout_id
from nerops.controller.run import begin, look
from tasks.common import actor


@task(cache_policy=NO_CACHE)
def begin_rollout(version: str, endpoint: str | None, new_attempt: bool) -> dict:
    """Deploy the candidate at 0 % (or resume the rollout of this version): the rollout record."""
    ctl = controller(endpoint, actor())
    resolved = ctl.gov.resolve(version)
    record, how = begin(ctl, resolved, new_attempt=new_attempt)
    return {
        "rollout": record.rollout_id,
        "how": how,
        "interval": ctl.plan.interval,
        "steps": [s.label for s in ctl.plan.steps],
        "candidate": record.candidate,
        "stable": record.stable,
    }


@task(cache_policy=NO_CACHE)
def take_look(rollout: str) -> dict:
    """One look of the judge, one step of the state machine, its evidence and its actions."""
    endpoint, version, attempt = parse_rollout_id(rollout)
    ctl = controller(endpoint, actor())
    record, verdict, done = look(ctl, ctl.store.load(endpoint, version, attempt))
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
    }


def read_record(rollout: str) -> dict:
    endpoint, version, attempt = parse_rollout_id(rollout)
    return record_store().load(endpoint, version, attempt).to_dict()


def ensure_concurrency_limit(name: str) -> None:
    """The strict global concurrency limit of one rollout per endpoint (created at 1 if missing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


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

    report = sweep(controller(endpoint, actor()))
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
    }


@task(cache_policy=NO_CACHE)
def refresh_dashboard(endpoint: str) -> str:
    """Write the monitoring dashboard again (the page the on-call engineer opens)."""
    from nerops.reporting import write_monitoring_dashboard
    from nerops.settings import get_settings

    return str(write_monitoring_dashboard(get_settings(), endpoint=endpoint))
