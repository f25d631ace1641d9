"""``retrain-model``: train -> evaluate -> register -> gate against the champion -> approve on pass.

Approval makes the version ``stage=prod`` and ``challenger``; the champion moves only when a rollout
completes, by a rollback, or by ``nerops champion set``. A pass the ledger of this moment refuses to approve
(another challenger's rollout is running, or the champion moved since the gate) is said and left gated: the run
completes, as after a failed gate.
"""

from __future__ import annotations

from prefect import flow

from nerops.params import RetrainRequest
from tasks.registry import approve_on_pass, gate_against_champion, reconcile_registry, register_candidate
from tasks.reports import publish_gate_report
from tasks.training import evaluate_candidate, train_candidate
from tasks.triggers import request_rollout


@flow(name="retrain-model", log_prints=True)
def retrain_model(request: RetrainRequest = RetrainRequest()) -> dict[str, object]:
    """Retrain the resume NER model and approve it if it beats the gate."""
    repairs = reconcile_registry()
    for action in repairs:
        print(f"repaired: {action}")
    training = train_candidate(request.config, request.overrides(), request.commit)
    evaluation = evaluate_candidate(training["model_dir"])
    version = register_candidate(training["model_dir"], training, evaluation)
    gate = gate_against_champion(version, request.gate)
    publish_gate_report(gate)
    print(gate["summary"])
    approved = None
    if gate["passed"] and request.approve_on_pass:
        approved = approve_on_pass(version, reason=f"{request.reason}: {gate['summary']}")
        if approved:
            print(request_rollout(version, request.reason))
    return {
        "version": version,
        "passed": gate["passed"],
        "reasons": gate["reasons"],
        "approved": bool(approved),
        "test_micro_f1": evaluation["micro"]["f1"],
        "trained_commit": training.get("git_commit"),
        "repairs": repairs,
    }


if __name__ == "__main__":
    retrain_model()
