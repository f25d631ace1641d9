"""``on-github-event``: a push the webhook receiver accepted (its ``nerops.github.retrain-requested`` event, through
the deployment's trigger) recorded in the ledger, and a ``retrain-model`` run of the pushed commit started.

The retrain's idempotency key is the commit, so the webhook and the training workflow both firing give one run.
With its defaults (no push) it does nothing and says so.
"""

from __future__ import annotations

from prefect import flow

from nerops.params import GithubPush
from tasks.triggers import record_github_push, start_retrain


@flow(name="on-github-event", log_prints=True)
def on_github_event(push: GithubPush | None = None) -> dict[str, object]:
    """Record an accepted GitHub push and start the retrain of its commit."""
    if push is None:
        print("nothing to do: this flow runs from the webhook receiver's event (a push to train)")
        return {"retrain": None}
    seq = record_github_push(push)
    reason = f"GitHub push of {push.commit[:12]} to {push.repository} {push.ref}: {push.reason}"[:500]
    run = start_retrain(push.commit, reason)
    print(f"delivery {push.delivery}: ledger entry {seq}; retrain-model run {run['name']} ({run['flow_run']})")
    return {"retrain": run, "ledger_seq": seq, "commit": push.commit}


if __name__ == "__main__":
    on_github_event()
