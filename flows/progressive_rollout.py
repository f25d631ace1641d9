"""``progressive-rollout``: deploy the candidate at 0 %, smoke it, walk the canary steps with the health judge
at every interval, bake at 100 %, retire the old deployment and move ``champion``; or roll back.

The rollout is the record under ``.state/rollouts/`` (not this run): a run resumes a rollout of the same
version that has not ended, a retry does not redo finished steps, and a run that lost the rollout to
another owner stops without touching traffic. One rollout per endpoint: the record's owner and lease, and
a strict global concurrency limit ``rollout-<endpoint>`` (tasks.fence). Durations come from the profile
(``NEROPS_ROLLOUT_PROFILE``). Final states: Completed (promoted); Failed named ``RolledBack`` (rolled
back), ``Aborted``, ``Refused`` (another rollout runs, or this one ended) or ``LeaseLost`` (the
concurrency lease is gone: handled like a crash); Cancelled named ``TakenOver`` (another owner drives it).

With ``approval=true`` the rollout waits before the profile's approval step (phase ``awaiting_approval``,
traffic frozen, the judge still looking: unhealthy rolls back) for ``nerops rollout approve --reason`` or a
``tasks.rollout.RolloutApproval`` sent as this run's input; after the profile's timeout, its default action.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact
from prefect.runtime import flow_run
from prefect.states import Cancelled, Completed, Failed

from nerops.controller.records import RolloutRefused
from nerops.params import RolloutRequest
from tasks.fence import EndpointFence
from tasks.rollout import (
    approvals_sent,
    approve_rollout,
    begin_rollout,
    give_up_rollout,
    preflight,
    probe_sender,
    take_look,
)

ROLLOUT_TAG = "rollout:"


def slug(rollout: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in rollout.lower()).strip("-")


def decisions_markdown(rollout: str, started: dict, rows: list[dict]) -> str:
    lines = [
        f"# Rollout {rollout}",
        "",
        f"Plan: {' -> '.join(started['steps'])}; candidate `{started['candidate']}`, "
        f"stable `{started['stable']}`. Every look is in the evidence file; the ledger has each decision.",
        "",
        "| look | phase | step | weight | verdict | why |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        why = row["reason"].replace("|", "/")[:400]
        cells = (row["look"], row["phase"], row["step"], f"{row['weight']} %", row["verdict"], why)
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    return "\n".join(lines)


@flow(name="progressive-rollout", log_prints=True)
def progressive_rollout(request: RolloutRequest = RolloutRequest()):
    """Roll a stage=prod version out step by step, judged against the stable deployment; roll back if unhealthy."""
    try:
        checked = preflight(request.version, request.endpoint)
    except RolloutRefused as exc:
        return Failed(name="Refused", message=str(exc))
    fence = EndpointFence(
        f"rollout-{checked['endpoint']}",
        Path(checked["lease_file"]),
        flow_run.get_id(),
        renew_every=checked["interval"],
    )
    try:
        with fence:
            if fence.released_earlier:
                print(f"released the concurrency lease {fence.released_earlier} this run held before it was retried")
            return _walk(checked, request, fence)
    except RolloutRefused as exc:
        return Failed(name="Refused", message=str(exc))


def _walk(checked: dict, request: RolloutRequest, fence: EndpointFence):
    prober = probe_sender(checked["endpoint"])  # before the rollout begins: bad probe resumes refuse it
    with prober or nullcontext():
        return _steps(checked, request, fence, prober)


def tag_run(rollout: str) -> str:
    """Tag this flow run ``rollout:<id>``: the UI can filter by it, and the crash automation reads it to run
    ``rollback-model rollout=<id>`` (automations/rollback-on-crash.yaml). A failure is only a log line."""
    from prefect.client.orchestration import get_client

    run_id, tag = flow_run.get_id(), f"{ROLLOUT_TAG}{rollout}"
    if not run_id:
        return ""
    try:
        with get_client(sync_client=True) as client:
            tags = list(client.read_flow_run(run_id).tags or [])
            if tag not in tags:
                client.update_flow_run(run_id, tags=[*tags, tag])
    except Exception as exc:  # the rollout goes on: its record, not the tag, is what a rollback reads
        return f"could not tag this run {tag}: {type(exc).__name__}: {exc}"[:300]
    return ""


def _steps(checked: dict, request: RolloutRequest, fence: EndpointFence, prober):
    started = begin_rollout(checked["version"], checked["endpoint"], request.new_attempt, request.approval)
    rollout, key = started["rollout"], slug(started["rollout"])
    if problem := tag_run(rollout):
        print(problem)
    print(f"rollout {rollout} {started['how']}: {' -> '.join(started['steps'])}")
    progress = create_progress_artifact(0.0, key=f"{key}-progress", description=f"rollout {rollout}")
    rows: list[dict] = []
    result: dict = {}
    next_look = time.monotonic()
    seen: set[str] = set()  # approvals received as this run's input, applied
    while result.get("phase") not in ("promoted", "rolled_back", "aborted"):
        if fence.lost:  # a crash, as far as the rollout knows: its record is saved; the next owner goes on
            print(give_up_rollout(rollout, fence.lost))
            return Failed(name="LeaseLost", message=f"rollout {rollout}: {fence.lost}; stopped after a saved look")
        next_look += started["interval"]
        time.sleep(max(0.0, next_look - time.monotonic()))
        result = take_look(rollout)
        if "lost" in result:
            return Cancelled(name="TakenOver", message=f"rollout {rollout}: {result['lost']}"[:1000])
        update_progress_artifact(
            progress,
            100.0 * result["step"] / max(1, result["steps"] - 1),
            description=f"step {result['step']} at {result['weight']} %: {result['verdict']}",
        )
        last = rows[-1] if rows else {}
        if (result["verdict"], result["step"]) != (last.get("verdict"), last.get("step")) or result["done"]:
            rows.append({**result, "look": len(rows) + 1})
            create_markdown_artifact(
                decisions_markdown(rollout, started, rows),
                key=f"{key}-decisions",
                description=f"rollout {rollout}: decisions and evidence",
            )
            print(f"step {result['step']} at {result['weight']} %: {result['verdict']}: {result['reason'][:300]}")
        if prober is not None:  # probe pairs until the next look while live traffic is short of the minimum
            was = prober.target is not None
            if prober.follow(result["kind"], result["phase"], result["verdict"], result["candidate"], result["stable"]):
                if not was:
                    print(f"probes on at {prober.rate:g}/s: live traffic is short of the minimum samples")
            elif was:
                print(f"probes off: {prober.counts.describe()}")
        if result["phase"] == "awaiting_approval":  # the judge keeps looking; an approval may come as input
            for key, given in approvals_sent(flow_run.get_id(), seen):
                seen.add(key)
                print("\n".join(approve_rollout(rollout, given.approver, given.reason)))
    summary = f"rollout {rollout} {result['phase']}: {result['ending'][:500]} (traffic {result['weights']})"
    if prober is not None and prober.counts.sent:
        summary += f"; {prober.counts.describe()}"
    if result["phase"] == "promoted":
        return Completed(message=summary, data={"rollout": rollout, **result})
    return Failed(name="RolledBack" if result["phase"] == "rolled_back" else "Aborted", message=summary)


if __name__ == "__main__":
    progressive_rollout()
