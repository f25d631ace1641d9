"""Tasks behind the triggers: a GitHub push recorded in the ledger, a retrain started, a rollout requested."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from nerops.params import GithubPush
from nerops.settings import get_settings
from tasks.common import actor


@task(name="record-github-push", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=2)
def record_github_push(push: GithubPush) -> int:
    """The accepted push, in the ledger (``retrain_requested``): delivery, repository, ref, commit, what matched."""
    from nerops.lifecycle import open_governance

    settings = get_settings()
    entry = open_governance(settings, actor=actor()).ledger.append(
        "retrain_requested",
        subject={"model": settings.registered_model, "commit": push.commit},
        evidence={
            "source": "github-webhook",
            "delivery": push.delivery,
            "repository": push.repository,
            "ref": push.ref,
            "before": push.before,
            "pusher": push.pusher,
            "matched": push.matched[:50],
            "matched_count": len(push.matched),
            "files_complete": push.files_complete,
            "reason": push.reason,
            "flow_run": str(flow_run.get_id() or ""),
        },
    )
    return entry.seq


@task(name="start-retrain", cache_policy=NO_CACHE, retries=2, retry_delay_seconds=5)
def start_retrain(commit: str, reason: str) -> dict[str, str]:
    """A ``retrain-model`` run of the commit (idempotent per commit: a second request gets the same run)."""
    from nerops.triggers.start import start_retrain as start

    run = start(commit, reason)
    return {"flow_run": str(run.id), "name": run.name, "state": run.state.name if run.state else ""}


@task(name="request-rollout", cache_policy=NO_CACHE)
def request_rollout(version: str, reason: str) -> str:
    """After an approval: the ``nerops.model.approved`` event, whose deployment trigger starts a rollout of the
    version when ``NEROPS_AUTO_ROLLOUT`` allows it (``on``; ``approval``: with its approval step on)."""
    from prefect.events import emit_event

    settings = get_settings()
    mode = settings.auto_rollout
    emit_event(
        event="nerops.model.approved",
        resource={
            "prefect.resource.id": f"nerops.model.{settings.registered_model}.v{version}",
            "prefect.resource.name": f"{settings.registered_model} v{version}",
            "nerops.auto-rollout": mode,
        },
        payload={
            "model": settings.registered_model,
            "version": str(version),
            "endpoint": settings.endpoint_of(),
            "approval": mode == "approval",
            "reason": f"automatic rollout after {reason}"[:500],
        },
    )
    if mode == "off":
        return f"v{version} approved; automatic rollouts are off (NEROPS_AUTO_ROLLOUT=off): start one yourself"
    how = "with its approval step on" if mode == "approval" else "by itself"
    return f"v{version} approved; a progressive-rollout of it starts {how} (NEROPS_AUTO_ROLLOUT={mode})"
