"""``gate-model``: gate a registered version (default: the newest ungated candidate); approve on pass if asked."""

from __future__ import annotations

from prefect import flow

from nerops.params import GateRequest
from tasks.registry import approve_on_pass, find_ungated_candidate, gate_against_champion
from tasks.reports import publish_gate_report


@flow(name="gate-model", log_prints=True)
def gate_model(request: GateRequest = GateRequest()) -> dict[str, object]:
    """Gate one version on the fixed test set and record the decision."""
    version = request.version or find_ungated_candidate()
    if version is None:
        print("nothing to gate: every candidate version has a gate entry")
        return {"version": None, "passed": None, "approved": False, "summary": "nothing to gate"}
    gate = gate_against_champion(version, request.gate)
    publish_gate_report(gate)
    print(gate["summary"])
    approved = None
    if gate["passed"] and request.approve_on_pass:
        approved = approve_on_pass(gate["challenger"]["version"], reason=f"{request.reason}: {gate['summary']}")
    return {"version": gate["challenger"]["version"], "passed": gate["passed"], "approved": bool(approved)}
