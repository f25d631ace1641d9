"""Tasks that write to the registry and the ledger (retried only on transient backend errors)."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from nerops import lifecycle
from nerops.errors import ConflictError
from nerops.params import GateParams
from tasks.common import actor, transient_only

RETRIES = {"retries": 2, "retry_delay_seconds": 3, "retry_condition_fn": transient_only, "cache_policy": NO_CACHE}


@task(name="reconcile-registry", **RETRIES)
def reconcile_registry() -> list[str]:
    """Repair what an interrupted run left: orphan versions, tags behind the ledger, a lagging anchor."""
    return lifecycle.reconcile_registry(actor=actor())


@task(name="register-candidate", **RETRIES)
def register_candidate(model_dir: str, training: dict[str, object], evaluation: dict[str, object]) -> str:
    """Register the model as a new candidate version with its lineage (a retry finds the version made)."""
    return lifecycle.register_candidate(model_dir, training, evaluation, actor=actor())


@task(name="find-ungated-candidate", **RETRIES)
def find_ungated_candidate() -> str | None:
    """The newest candidate version without a gate entry, or None."""
    return lifecycle.newest_ungated(actor=actor())


@task(name="gate-against-champion", **RETRIES)
def gate_against_champion(version: str, gate: GateParams) -> dict[str, object]:
    """Gate a version against the champion of this moment; the decision goes to the ledger."""
    return lifecycle.gate_version(version, gate.policy(), actor=actor())


@task(name="approve-version", **RETRIES)
def approve_version(version: str, reason: str) -> dict[str, object]:
    """Approve a version with a current pass: stage=prod, alias challenger (a retry returns the same entry)."""
    return lifecycle.approve_version(version, reason, actor=actor())


def approve_on_pass(version: str, reason: str) -> dict[str, object] | None:
    """``approve_version`` in a flow, or None with the reason said when it conflicts with the ledger of this moment:
    another challenger's rollout is running, or the champion moved since the gate. The version stays registered and
    gated, not approved, and the run goes on (as after a failed gate); any other refusal fails the run."""
    try:
        return approve_version(version, reason)
    except ConflictError as exc:
        print(
            f"v{version} passed the gate but is not approved now: {exc}. When that has settled: "
            f"nerops gate {version} --approve"
        )
        return None
