"""Starting runs of the project's deployments from outside a flow or from another flow (``nerops trigger``, the
``on-github-event`` flow, the GitHub workflows): one place that names the deployments and the idempotency keys.

A retrain asked for a commit has the idempotency key ``retrain-model/<sha>``: the webhook's flow and the training
workflow both asking for the same commit get the same flow run back from the Prefect server, so one retrain.
"""

from __future__ import annotations

from nerops.settings import prefect_api_url

RETRAIN = "retrain-model/retrain-model"
ROLLOUT = "progressive-rollout/progressive-rollout"
ROLLBACK = "rollback-model/rollback-model"


def retrain_key(commit: str) -> str:
    return f"retrain-model/{commit}"


def start(deployment: str, parameters: dict, *, idempotency_key: str | None = None, tags: list[str] | None = None):
    """Create a run of ``deployment`` (``flow/deployment``) and return it at once (the worker runs it)."""
    from prefect.context import FlowRunContext
    from prefect.deployments import run_deployment

    if FlowRunContext.get() is None:
        prefect_api_url(
            "to the Prefect server the deployments are on (`nerops platform up` prints it; on CI, a repository secret)"
        )
    return run_deployment(
        deployment, parameters=parameters, idempotency_key=idempotency_key, timeout=0, tags=tags or None
    )


def start_retrain(commit: str, reason: str):
    """One ``retrain-model`` run of ``commit`` (the same run for every caller asking for that commit)."""
    return start(RETRAIN, {"request": {"commit": commit, "reason": reason}}, idempotency_key=retrain_key(commit))
