"""The rollout flows end to end on the local platform, under real traffic, on the wall clock.

What it measures (the ``demo`` profile of ``rollouts/policy.yaml``: judged every 5 s; readiness, a shadow step
at 50 % mirrored, canary 25 / 50 %, 100 %, a bake with 50 % mirrored; 30 samples per arm), with the quick
model trained here, one local endpoint, live traffic at ``RATE`` requests/s from two client threads:

    bad candidates   the three fault kinds of ``nerops fault-model`` (their defaults: each arms after its
                     first 10 requests), each rolled out by the ``progressive-rollout`` flow from the
                     champion: the wall time from the first live request the candidate answered to full
                     rollback (the endpoint's traffic and mirror no longer naming it, polled every 0.1 s),
                     the requests it answered, and the blast radius (the share of all requests sent from the
                     flow's start to full rollback that it answered).
                     Peer: Flagger's analysis with its documented checks (request-success-rate >= 99 %,
                     request-duration p99 <= 500 ms, each over one interval's window, checked every interval;
                     rolled back after ``threshold`` failed checks: 1, its default when unset, and 10, its
                     docs' example) replayed on the very requests the client saw answered by the candidate,
                     with the same interval as ours. Replayed, not run: where it had not decided by the time
                     our flow had rolled back, there is no more candidate traffic to judge and it is reported
                     as "not decided".
    good candidates  a copy of the champion (the same model, one extra file: a version of its own) rolled out
                     and promoted, alternately by the ``progressive-rollout`` flow (Prefect: a temporary local
                     server, each look a task run) and by a bare Python loop driving the same controller at the
                     same cadence (the peer: no Prefect). Per step: wall time, the configured wait, and the
                     orchestration overhead = wall minus wait; per look: the look's own time (the flow's from
                     its task runs' start and end on the Prefect server, the loop's timed around the call).

What it leaves out: one machine, one model (the candidate's instances share the 2 cores with the stable one
and the client); the faults arm after 10 requests of the candidate's own process (mirrored copies and smoke
requests count); the Flagger replay uses client-side latency (Flagger reads the mesh's) and cannot see
entities at all (it has no model signal: what it would catch with a hand-written query is not replayed);
the production profile (1-minute looks, 10-minute steps) is not run: its decisions are bench (d)
(``bench/rollouts.py``); one run of each kind, so its figures carry the noise of one run.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nerops.serving.traffic import SteadyTraffic

RESULTS = Path(__file__).parent / "results" / "rollout_flows.json"
PROFILE = "demo"
ENDPOINT = "resume-ner"  # the model's production endpoint (set from the settings at the start)
RATE = 10.0  # live requests per second, over two client threads
GOOD_ROUNDS = int(os.environ.get("NEROPS_BENCH_GOOD_ROUNDS", "2"))  # each round: one flow, one bare loop
BAD_KINDS = ("slow", "fewer-entities", "errors")
FLAGGER_THRESHOLDS = (1, 10)
FLAGGER_MIN_SUCCESS, FLAGGER_MAX_P99_MS = 0.99, 500.0
console = Console(width=170)


# ------------------------------------------------------------------------------------ traffic and watching


@dataclass
class Watch:
    """The endpoint's traffic and mirror, polled every 0.1 s: (time, traffic, mirror)."""

    control: object
    timeline: list[tuple[float, dict, dict]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.thread = threading.Thread(target=self._poll, daemon=True)
        self.thread.start()

    def _poll(self) -> None:
        while not self.stop.is_set():
            try:
                state = self.control.read().state
                self.timeline.append((time.time(), dict(state["traffic"]), dict(state.get("mirror") or {})))
            except Exception:  # a read during a change: the next poll sees it
                pass
            time.sleep(0.1)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)

    def gone_after(self, deployment: str, since: float) -> float | None:
        """The first poll after ``since`` at which neither traffic nor mirror sends anything to ``deployment``."""
        for when, traffic, mirror in self.timeline:
            if when >= since and not traffic.get(deployment) and not mirror.get(deployment):
                return when
        return None


# ---------------------------------------------------------------------------------------------- rollouts


def _variant(model_dir: Path, n: int, folder: Path) -> Path:
    copy = folder / f"variant-{n}"
    shutil.copytree(model_dir, copy)
    (copy / "VARIANT").write_text(f"bench copy {n}: the same model, a version of its own\n")
    return copy


def _plan():
    """The plan of the profile the flows run under (the controller's own reading of the policy)."""
    from nerops.controller.factory import controller

    return controller(ENDPOINT, "bench:reader", metrics=False).plan


def _record(version: str):
    from nerops.controller.factory import record_store

    store = record_store()
    return max((r for r in store.all(ENDPOINT) if r.version == version), key=lambda r: r.attempt)


def run_flow(version: str) -> dict:
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    from flows.progressive_rollout import progressive_rollout
    from nerops.params import RolloutRequest

    started = time.time()
    state = progressive_rollout(RolloutRequest(version=version, endpoint=ENDPOINT), return_state=True)
    ended = time.time()
    looks = []
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[state.state_details.flow_run_id]))
        )
        for run in runs:
            if run.name.startswith("take_look") and run.start_time and run.end_time:
                looks.append((run.end_time - run.start_time).total_seconds())
    return {"how": "flow", "state": state.name, "message": state.message, "started": started, "ended": ended,
            "look_seconds": looks}  # fmt: skip


def run_loop(version: str) -> dict:
    """The peer: the same controller, the same cadence as the flow's walk, no Prefect."""
    from nerops.controller.factory import controller
    from nerops.controller.run import begin, look
    from nerops.errors import TransientBackendError

    started = time.time()
    ctl = controller(ENDPOINT, "bench:bare-loop")
    record, _ = begin(ctl, version)
    looks = []
    next_look = time.monotonic()
    while not record.ended:
        next_look += ctl.plan.interval
        time.sleep(max(0.0, next_look - time.monotonic()))
        t0 = time.perf_counter()
        for attempt in range(3):  # as the flow's take_look task: two retries, 1 s apart, of a transient error
            try:
                record, _, _ = look(ctl, record)
                break
            except TransientBackendError:
                if attempt == 2:
                    raise
                time.sleep(1.0)
                record = ctl.store.load(record.endpoint, record.version, record.attempt)
        looks.append(time.perf_counter() - t0)
    return {"how": "bare loop", "state": record.state["phase"], "message": record.state.get("ending", ""),
            "started": started, "ended": time.time(), "look_seconds": looks}  # fmt: skip


def steps_of(version: str) -> list[dict]:
    """Per step, from the rollout's evidence: wall time (the look that moved into it to the look that moved on,
    or that promoted), its configured wait, and the overhead."""
    from nerops.controller import evidence
    from nerops.controller.factory import record_store

    record = _record(version)
    plan = _plan()
    lines = evidence.read(record_store().evidence_path(record))
    entered: dict[int, float] = {}
    for line in lines:
        if line["phase"] in ("progressing", "awaiting_approval", "paused"):
            entered.setdefault(line["step"], line["time"])
    ended = next((line["time"] for line in lines if line["phase"] == "promoted"), None)
    if ended is not None:
        entered[len(plan.steps)] = ended  # the bake ends with the promotion
    rows = []
    for index, step in enumerate(plan.steps):
        if index + 1 not in entered or index not in entered:
            continue
        wall = entered[index + 1] - entered[index]
        looks = sum(1 for line in lines if line["step"] == index)
        rows.append({"step": step.label, "wall_s": wall, "wait_s": step.wait, "overhead_s": wall - step.wait,
                     "looks": looks})  # fmt: skip
    return rows


def bad_candidate(kind: str, requests: SteadyTraffic, watch: Watch) -> dict:
    from nerops import lifecycle
    from nerops.controller import evidence
    from nerops.controller.factory import record_store

    champion = lifecycle.champion_version()
    version = str(lifecycle.fault_model(champion, kind, reason="bench: a bad candidate", actor="bench")["version"])
    assert lifecycle.gate_version(version, actor="bench")["passed"], f"the gate stopped the {kind} fault"
    lifecycle.approve_version(version, "bench: fault", actor="bench")
    console.print(f"rolling out v{version} ({kind}) ...")
    run = run_flow(version)
    record = _record(version)
    candidate = record.candidate
    answered = [r for r in requests.log if r[2] == candidate and r[0] >= run["started"]]
    first_live = min((r[0] for r in answered), default=None)
    gone = watch.gone_after(candidate, first_live) if first_live is not None else None
    until = gone or run["ended"]
    sent = [r for r in requests.log if run["started"] <= r[0] <= until]
    from_first = [r for r in sent if first_live is not None and r[0] >= first_live]
    lines = evidence.read(record_store().evidence_path(record))
    first_look = next(
        (i for i, line in enumerate(lines)
         if any(m["candidate_samples"] for m in line["look"]["metrics"] if m["traffic"][0] == "live")),
        None,
    )  # fmt: skip
    decided = next((i for i, line in enumerate(lines) if line["phase"] == "rolled_back"), None)
    interval = _plan().interval
    return {
        "kind": kind,
        "version": version,
        "state": run["state"],
        "ending": record.state.get("ending", ""),
        "weights": record.state.get("weights"),
        "candidate_requests": len(answered),
        "requests_sent": len(sent),
        "blast_radius": len(answered) / max(1, len(sent)),
        "blast_radius_from_first_live": len(answered) / max(1, len(from_first)),
        "seconds_first_live_to_rollback": (gone - first_live) if gone and first_live else None,
        "looks_first_live_to_decision": (decided - first_look) if None not in (decided, first_look) else None,
        "flagger": {str(t): flagger(answered, first_live, until, t, interval) for t in FLAGGER_THRESHOLDS},
    }


def flagger(answered: list[tuple], first_live: float | None, until: float, threshold: int, interval: float) -> dict:
    """Flagger's analysis replayed on the candidate's answered requests ``(sent, answered, deployment, status,
    latency ms)``: a check every interval over the last interval, from the first; a failed check when the
    success rate (non-5xx) < 99 %, the p99 latency > 500 ms, or no values; rollback at ``threshold`` failed
    checks (cumulative)."""
    if first_live is None:
        return {"decided_after_s": None, "why": "the candidate answered no request"}
    failed, tick = 0, first_live + interval
    while tick <= until:
        window = [r for r in answered if tick - interval <= r[0] < tick]
        why = ""
        if not window:
            why = "no values"
        else:
            success = sum(1 for r in window if 0 < r[3] < 500) / len(window)
            p99 = sorted(r[4] for r in window)[math.ceil(0.99 * len(window)) - 1]  # nearest rank
            if success < FLAGGER_MIN_SUCCESS:
                why = f"request-success-rate {100 * success:.1f} % < 99 %"
            elif p99 > FLAGGER_MAX_P99_MS:
                why = f"request-duration p99 {p99:.0f} ms > 500 ms"
        failed += bool(why)
        if failed >= threshold:
            return {"decided_after_s": tick - first_live, "why": why, "failed_checks": failed}
        tick += interval
    return {"decided_after_s": None, "why": f"not decided ({failed} failed checks) by our rollback",
            "failed_checks": failed}  # fmt: skip


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nerops-bench-flows-") as tmp:
        os.environ.update(
            NEROPS_STATE_DIR=str(Path(tmp) / "state"),
            NEROPS_ROLLOUT_PROFILE=PROFILE,
            PREFECT_HOME=str(Path(tmp) / "prefect"),
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
        )
        report = _run(Path(tmp))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    _print(report)


def _run(tmp: Path) -> dict:
    from nerops import lifecycle
    from nerops.dataset import load_dataset
    from nerops.first_deployment import deploy_first
    from nerops.serving.client import LocalEndpoint
    from nerops.settings import get_settings

    global ENDPOINT
    settings = get_settings()
    ENDPOINT = settings.endpoint_of()
    console.print("training and registering the quick model ...")
    training = lifecycle.train_candidate("quick")
    evaluation = lifecycle.evaluate_candidate(training["model_dir"])
    v1 = lifecycle.register_candidate(training["model_dir"], training, evaluation)
    assert lifecycle.gate_version(v1)["passed"]
    lifecycle.approve_version(v1, "benchmark")
    texts = [doc.text for doc in load_dataset(settings).test]
    endpoint = LocalEndpoint.start(settings, ENDPOINT, export_interval=1.0)
    requests = watch = None
    try:
        deploy_first(lifecycle.open_governance(actor="bench"), endpoint.client(), v1, "blue", endpoint=ENDPOINT)
        requests = SteadyTraffic(endpoint.url, endpoint.key, texts, rate=RATE)
        requests.start()
        watch = Watch(endpoint.client())
        watch.start()
        _warm_up_prefect()
        good = []
        for n in range(2 * GOOD_ROUNDS):
            how = run_flow if (n % 2 == 0) == (n // 2 % 2 == 0) else run_loop  # flow, loop, loop, flow, ...
            model = _variant(Path(training["model_dir"]), n, tmp)
            version = lifecycle.register_candidate(str(model), training, evaluation)
            assert lifecycle.gate_version(version, actor="bench")["passed"]
            lifecycle.approve_version(version, "bench: a good candidate", actor="bench")
            console.print(f"rolling out v{version} (a copy of the champion) by the {how.__name__[4:]} ...")
            run = how(version)
            assert lifecycle.champion_version() == version, run
            good.append({**run, "version": version, "steps": steps_of(version)})
        bad = [bad_candidate(kind, requests, watch) for kind in BAD_KINDS]
    finally:
        for part in (watch, requests):
            if part is not None:
                part.close()
        endpoint.stop()
    return {
        "benchmark": "rollout_flows",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "profile": PROFILE,
        "rate_per_s": RATE,
        "good": good,
        "bad": bad,
        "overhead": _overhead(good),
    }


def _warm_up_prefect() -> None:
    """Start the temporary Prefect server before anything is timed."""
    from prefect import flow

    @flow(name="bench-warm-up")
    def warm_up() -> int:
        return 1

    warm_up()


def _overhead(good: list[dict]) -> dict:
    out = {}
    for how in ("flow", "bare loop"):
        runs = [g for g in good if g["how"] == how]
        steps = [s for g in runs for s in g["steps"]]
        looks = [x for g in runs for x in g["look_seconds"]]
        out[how] = {
            "rollouts": len(runs),
            "total_s": statistics.median(g["ended"] - g["started"] for g in runs) if runs else None,
            "overhead_per_step_s": statistics.median(s["overhead_s"] for s in steps) if steps else None,
            "look_median_s": statistics.median(looks) if looks else None,
            "look_p95_s": sorted(looks)[int(0.95 * (len(looks) - 1))] if looks else None,
        }
    return out


def _print(report: dict) -> None:
    table = Table(title=f"(e) bad candidates through the progressive-rollout flow ({report['profile']} profile, "
                  f"{report['rate_per_s']:.0f} live requests/s)")  # fmt: skip
    for column in ("fault", "first live request -> full rollback", "looks to decision", "candidate requests",
                   "blast radius", "decided by", "Flagger threshold 1", "Flagger threshold 10"):  # fmt: skip
        table.add_column(column)
    for row in report["bad"]:
        seconds = row["seconds_first_live_to_rollback"]

        def peer(t: str, row=row) -> str:
            got = row["flagger"][t]
            return f"{got['decided_after_s']:.0f} s ({got['why']})" if got["decided_after_s"] else got["why"]

        table.add_row(
            row["kind"], f"{seconds:.1f} s" if seconds is not None else "-", str(row["looks_first_live_to_decision"]),
            str(row["candidate_requests"]), f"{100 * row['blast_radius']:.1f} %",
            row["ending"].removeprefix("unhealthy: ").split(":")[0] + f" (traffic {row.get('weights', '?')})",
            peer("1"), peer("10"),
        )  # fmt: skip
    console.print(table)
    table = Table(title="(f) orchestration: the flow (Prefect) against a bare loop, the same controller and cadence")
    for column in ("driven by", "rollouts", "whole rollout (median)", "wall - wait per step (median)",
                   "one look (median / p95)"):  # fmt: skip
        table.add_column(column)
    for how, row in report["overhead"].items():
        if row["rollouts"]:
            table.add_row(how, str(row["rollouts"]), f"{row['total_s']:.1f} s", f"{row['overhead_per_step_s']:.2f} s",
                          f"{row['look_median_s']:.2f} / {row['look_p95_s']:.2f} s")  # fmt: skip
    console.print(table)


if __name__ == "__main__":
    main()
