"""``rollback-model``: two modes, neither needing the metrics source, the Prefect API's state or the registry.

    rollout=<id>        bring that rollout's endpoint to its recorded stable state (idempotent: a no-op when
                        traffic is already there): what an automation runs after a crashed rollout
    to=previous|VERSION production back to the previous champion (from the ledger's history) or a named
                        earlier stage=prod version, served from the endpoint's verified local copies

With neither (the deployment's defaults) it does nothing and says so.
"""

from __future__ import annotations

from prefect import flow

from nerops.params import RollbackRequest
from tasks.rollout import bring_back_to_stable, roll_production_back


@flow(name="rollback-model", log_prints=True)
def rollback_model(request: RollbackRequest = RollbackRequest()) -> list[str]:
    """Roll back: a rollout to its stable state, or production to an earlier version."""
    if request.rollout and request.to:
        raise ValueError("give either 'rollout' or 'to', not both")
    if request.rollout:
        lines = bring_back_to_stable(request.rollout, request.reason)
    elif request.to:
        lines = roll_production_back(request.to, request.endpoint, request.reason)
    else:
        lines = ["nothing to do: give rollout=<id> or to=previous|VERSION"]
    for line in lines:
        print(line)
    return lines


if __name__ == "__main__":
    rollback_model()
