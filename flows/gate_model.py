"""``gate-model``: gate a registered version against the champion of this moment; promote on pass if asked."""

from __future__ import annotations

from prefect import flow

from nerops.params import GateRequest
from tasks.registry import gate_against_champion, promote_version
from tasks.reports import publish_gate_report


@flow(name="gate-model", log_prints=True)
def gate_model(request: GateRequest) -> dict[str, object]:
    """Gate one version on the fixed test set and record the decision."""
    gate = gate_against_champion(request.version, request.gate)
    publish_gate_report(gate)
    print(gate["summary"])
    promoted = None
    if gate["passed"] and request.promote_on_pass:
        promoted = promote_version(gate["challenger"]["version"], reason=f"{request.reason}: {gate['summary']}")
    return {"version": gate["challenger"]["version"], "passed": gate["passed"], "promoted": bool(promoted)}
