"""The rollout controller against the real local endpoint and its telemetry, under real traffic (test profile)."""

from __future__ import annotations

import contextlib
import shutil
import threading
import time
import warnings
from pathlib import Path

import pytest

from nerops.controller import evidence
from nerops.controller.records import RecordStore, RolloutRefused
from nerops.controller.run import Controller, begin, look
from nerops.gate import GatePolicy
from nerops.rollout.plan import build_plan
from nerops.rollout.policy import load_policy
from nerops.serving.client import LocalEndpoint
from nerops.serving.traffic import run_traffic
from nerops.settings import Settings
from tests.conftest import approve_synthetic, model_copy
from tests.test_endpoint import texts

POLICY = GatePolicy(min_micro_f1=0.5, max_latency_ratio=3.0, bootstrap_samples=200)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def platform(tmp_path_factory, tiny_model: Path, reseeded_model: Path, synthetic_data, synthetic_personal):
    """v1 champion on deployment blue (all traffic), v2 gated against it and approved; traffic flowing."""
    from nerops.data import read_corpus
    from nerops.first_deployment import deploy_first
    from nerops.gating import run_gate
    from nerops.lifecycle import open_governance
    from tests.test_registry_outage import MlflowServer

    folder = tmp_path_factory.mktemp("rollout-state")
    (folder / "mlflow").mkdir()
    registry = MlflowServer(f"sqlite:///{folder / 'mlflow' / 'mlflow.db'}", folder / "mlflow" / "artifacts")
    registry.start()  # a real registry server, so that a test can stop it
    mp = pytest.MonkeyPatch()
    mp.setenv("NEROPS_STATE_DIR", str(folder))
    mp.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    mp.setenv("NEROPS_MLFLOW_TRACKING_URI", registry.url)
    mp.setenv("NEROPS_ENDPOINTS", '{"other-ner": "ner2"}')
    mp.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while it is stopped
    mp.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    gov = open_governance(actor="tester@test")
    docs = read_corpus(synthetic_data[1])

    def register(model: Path, gov=gov) -> str:
        return approve_synthetic(gov, model, docs, synthetic_personal, POLICY)

    v1 = register(tiny_model)
    platform_register = register
    ep = LocalEndpoint.start(Settings(state_dir=folder), "ner", export_interval=0.25)
    deploy_first(gov, ep.client(), v1, "blue", endpoint="ner")
    v2 = register(reseeded_model)
    stop, quiet = threading.Event(), threading.Event()
    corpus = texts(40)

    def traffic() -> None:
        while not stop.is_set():
            if quiet.is_set():
                stop.wait(0.05)
                continue
            run_traffic(ep.url, ep.key, corpus, requests=40, concurrency=6, rate=40.0)

    @contextlib.contextmanager
    def no_live_traffic():
        """No live request while inside (the batch in flight finishes first), then traffic as before."""
        quiet.set()
        time.sleep(2.5)  # a batch of 40 at 40/s in flight, and its export
        try:
            yield
        finally:
            quiet.clear()

    thread = threading.Thread(target=traffic, daemon=True)
    thread.start()
    models = {v1: tiny_model, v2: reseeded_model}

    def challenger() -> str:
        """The version that is not champion, gated against the champion of this moment and approved.

        Once that model was archived (rolled back for good), a copy of it with one extra file: a version of its own.
        """
        state = gov.state()
        other = next(v for v in models if v != state.champion)
        if state.archived.get(other):
            copy = model_copy(models[other], folder / "variants" / f"{other}-{len(models)}", f"a copy of v{other}")
            models.pop(other)
            other = platform_register(copy)
            models[other] = copy
            return other
        return platform_register(models[other]) if state.challenger != other else other

    def fault(kind: str, **params) -> str:
        """A fault version built from the champion (the gate passes it like its source), approved."""
        from nerops.lifecycle import fault_model

        made = fault_model(gov.state().champion, kind, reason="test: a bad candidate", actor="tester@test", **params)
        version = str(made["version"])
        assert run_gate(gov, version, docs, POLICY, test_sha256="0" * 64, personal=synthetic_personal)[0].passed
        gov.approve(version, reason="test: fault")
        return version

    yield {
        "folder": folder,
        "gov": gov,
        "endpoint": ep,
        "versions": (v1, v2),
        "challenger": challenger,
        "fault": fault,
        "registry": registry,
        "register": register,
        "quiet": no_live_traffic,
        "corpus": corpus,
    }
    stop.set()
    thread.join(30)
    ep.stop()
    registry.stop()
    mp.undo()


def controller(platform, owner: str = "tester@test", *, first_canary: int | None = None) -> Controller:
    """The test profile's controller; ``first_canary``: its canary steps from that weight on (e.g. 50 -> 100)."""
    from nerops.telemetry import TelemetryStore

    policy, text = load_policy()
    if first_canary is not None:
        test = policy.profiles["test"]
        steps = [step for step in test.steps if step.weight >= first_canary]
        policy = policy.model_copy(
            update={"profiles": {**policy.profiles, "test": test.model_copy(update={"steps": steps})}}
        )
    plan = build_plan(policy, "test", policy_sha256="x")
    source = TelemetryStore(platform["folder"] / "telemetry" / "telemetry.db")
    return Controller(
        platform["gov"],
        RecordStore(platform["folder"] / "rollouts"),
        platform["endpoint"].client(),
        source,
        plan,
        text,
        owner,
        "ner",
        lease_s=5.0,
    )


def drive(ctl: Controller, record, limit: float = 90.0):
    verdicts = []
    deadline = time.monotonic() + limit
    while not record.ended and time.monotonic() < deadline:
        time.sleep(ctl.plan.interval)
        record, verdict, _ = look(ctl, record)
        verdicts.append(verdict)
    return record, verdicts


def test_a_good_candidate_is_promoted_step_by_step_under_real_traffic(platform):
    v1, v2 = platform["versions"]
    ctl = controller(platform)
    record, how = begin(ctl, v2)
    assert how == "started" and record.candidate == f"v{v2}-1"
    with pytest.raises(RolloutRefused, match="one rollout per endpoint"):
        begin(controller(platform, "other@host"), v1)
    record, verdicts = drive(ctl, record)
    assert record.state["phase"] == "promoted", [v.reason for v in verdicts[-3:]]
    assert record.state["weights"] == [0, 5, 25, 50, 100]
    gov = platform["gov"]
    assert gov.state().champion == v2
    view = ctl.control.read().state
    assert list(view["deployments"]) == [record.candidate] and view["traffic"] == {record.candidate: 100}
    assert view["deployments"][record.candidate]["instance_count"] == 2  # scaled to full before 100 %
    scaled = [e for e in gov.ledger.find(kind="deployment_scaled") if e.subject.get("deployment") == record.candidate]
    assert len(scaled) == 1
    kinds = [e.kind for e in gov.ledger.find(rollout=record.rollout_id)]
    assert kinds[0] == "rollout_started" and kinds[-1] == "rollout_finished"
    assert "champion_change" in [e.kind for e in gov.ledger.entries()[-6:]]
    assert gov.ledger.verify().ok
    looks = evidence.read(ctl.store.evidence_path(record))
    assert len(looks) == len(verdicts) and looks[-1]["phase"] == "promoted"
    judged = [line["look"] for line in looks if line["look"]["metrics"]]
    assert judged and all(m["candidate_samples"] >= 0 for m in judged[-1]["metrics"])
    decisions = gov.ledger.find(kind="rollout_decision", rollout=record.rollout_id)
    assert [d.evidence["decision"] for d in decisions].count("step") == 4  # 5 %, 25 %, 50 %, bake
    finished = gov.ledger.find(kind="rollout_finished", rollout=record.rollout_id)[0]
    assert (finished.evidence["evidence_lines"], finished.evidence["evidence_sha256"]) == evidence.digest(
        ctl.store.evidence_path(record)
    )
    print("\n".join(f"{d.evidence['decision']}: {d.evidence['summary'][:150]}" for d in decisions))


def test_the_progressive_rollout_flow_promotes_and_leaves_its_artifacts(platform, prefect_harness, monkeypatch):
    from flows.progressive_rollout import progressive_rollout
    from nerops.params import RolloutRequest
    from tests.test_flows import artifacts

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    v3 = platform["challenger"]()
    state = progressive_rollout(RolloutRequest(endpoint="ner"), return_state=True)  # default: the challenger
    assert state.is_completed(), state.message
    assert platform["gov"].state().champion == v3
    assert f"rollout ner/v{v3}/1 promoted" in state.message and "[0, 5, 25, 50, 100]" in state.message
    table = max(artifacts(f"ner-v{v3}-1-decisions"), key=lambda a: a.created).data
    assert "| 1 | progressing | 1 | 5 % | healthy | 2 of 2 smoke requests answered 200" in table
    assert "| promoted | 4 | 100 % | healthy |" in table
    assert table.count("| healthy |") >= 5  # readiness, then each step's end
    assert artifacts(f"ner-v{v3}-1-progress")
    assert artifacts(f"ner-v{v3}-1-progress")


@pytest.mark.parametrize(
    ("kind", "params", "metric"),
    [
        ("slow", {"after": 0, "delay_ms": 150}, "latency"),
        ("fewer-entities", {"after": 0}, "entities-per"),
        ("errors", {"after": 2, "share": 0.5}, "error"),  # the error rate against stable, or the error ceiling
    ],
)
def test_a_bad_candidate_the_gate_passed_is_rolled_back_by_the_judge_with_its_evidence(
    platform, kind, params, metric, monkeypatch
):
    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    champion = gov.state().champion
    version = platform["fault"](kind, **params)
    # The first canary at 50 %: at 5 % of this traffic the candidate answers under one request a second on a
    # loaded machine, and no judge decides before it has the samples (measured: 8 requests in 12 looks)
    ctl = controller(platform, first_canary=50)
    record, _ = begin(ctl, version)
    record, verdicts = drive(ctl, record)
    assert record.state["phase"] == "rolled_back", record.state.get("ending")
    assert record.state["weights"][-1] == 0 and metric in record.state["ending"]
    assert gov.state().champion == champion and gov.state().archived.get(version) == "rolled_back"
    looks = evidence.read(ctl.store.evidence_path(record))
    first_live = next(
        i
        for i, line in enumerate(looks)
        if any(m["candidate_samples"] for m in line["look"]["metrics"] if m["traffic"][0] == "live")
    )
    decided = next(i for i, line in enumerate(looks) if line["phase"] == "rolled_back")
    unhealthy = [m for m in looks[decided]["look"]["metrics"] if m["status"] == "unhealthy"]
    deciding = {m["metric"] for m in unhealthy}
    ready = next(  # the first look at which the deciding tests had their minimum samples: none may decide before
        i
        for i, line in enumerate(looks)
        if all(
            m["candidate_samples"] >= m["min_samples"] and (m["stable_samples"] or 0) >= m["min_samples"]
            for m in line["look"]["metrics"]
            if m["metric"] in deciding and m["kind"] != "ceiling"
        )
        and i >= first_live
    )
    print(f"{kind}: decided {decided - first_live} looks after the first with live candidate requests, "
          f"{decided - ready} after the deciding tests had their minimum samples")  # fmt: skip
    assert decided - ready <= 2, looks[ready : decided + 1]  # measured: 0-1 (1 s looks, half the traffic)
    assert decided - first_live <= 3, looks[first_live : decided + 1]
    assert unhealthy or looks[decided]["look"]["hard_failures"]
    for m in unhealthy:  # the evidence a person reads: the test, the values, the samples, the threshold
        assert m["e_value"] >= m["threshold"] and m["candidate_samples"] >= m["min_samples"] and m["tested"]
    view = ctl.control.read().state
    assert record.candidate not in view["deployments"]  # scaled down: deleted once it took no traffic
    from nerops.controller.manual import back_to_stable

    _, lines = back_to_stable(controller(platform, "prefect:rollback-model"), record.rollout_id)
    assert lines[0].startswith("traffic already") and gov.state().champion == champion  # the automation: a no-op


def test_an_abandoned_rollout_is_refused_to_others_until_its_lease_ends_then_taken_over(platform):
    gov = platform["gov"]
    candidate = platform["challenger"]()
    first = controller(platform, "flow-run:first")
    first.lease_s = 2.0
    record, _ = begin(first, candidate, new_attempt=True)
    record, _, _ = look(first, record)
    second = controller(platform, "flow-run:second")
    with pytest.raises(RolloutRefused, match="owned by flow-run:first"):
        begin(second, candidate)
    time.sleep(2.5)
    taken, how = begin(second, candidate)
    assert how == "taken over" and taken.state["weight"] == record.state["weight"]  # no step redone
    taken, _ = drive(second, taken)
    assert taken.state["phase"] == "promoted" and taken.state["weights"] == [0, 5, 25, 50, 100]
    owners = [e.evidence["owner"] for e in gov.ledger.find(rollout=taken.rollout_id) if "owner" in e.evidence]
    assert owners == ["flow-run:first", "flow-run:second"]


def test_a_manual_abort_the_owner_does_not_apply_takes_over_and_then_recovery_is_a_no_op(platform):
    from nerops.controller.manual import back_to_stable, manual
    from nerops.controller.records import OwnershipLost
    from nerops.rollout.actions import Command

    gov = platform["gov"]
    champion = gov.state().champion
    candidate = platform["challenger"]()
    owner = controller(platform, "flow-run:crashed")
    record, _ = begin(owner, candidate, new_attempt=True)
    record, _, _ = look(owner, record)  # readiness passes: 5 %
    assert record.state["weight"] == 5
    cli = controller(platform, "cli:ops@host")
    rolled, lines, how = manual(cli, Command("abort", cli.owner, "customer report"), wait_s=1.0)
    assert how == "applied" and rolled.state["phase"] == "aborted"
    assert rolled.state["weights"] == [0, 5, 0]
    assert gov.state().champion == champion and gov.state().stage(candidate) == "prod"  # a new attempt may follow
    forced = gov.ledger.find(kind="rollout_owner", rollout=record.rollout_id)[-1]
    assert forced.evidence["previous_owner"] == "flow-run:crashed" and "did not apply" in forced.evidence["forced"]
    with pytest.raises(OwnershipLost, match="owned by cli:ops@host now"):
        look(owner, record)
    view = cli.control.read().state
    assert {k: v for k, v in view["traffic"].items() if v} == {record.stable: 100} and view["mirror"] == {}
    _, lines = back_to_stable(cli, record.rollout_id)
    assert lines == [f"traffic already {{'{record.stable}': 100}}, mirror {{}}"]
    assert gov.ledger.verify().ok


def test_the_health_sweep_takes_over_a_rollout_whose_owner_died_and_finishes_it(platform, prefect_harness, monkeypatch):
    from flows.health_sweep import health_sweep

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    candidate = platform["challenger"]()
    dead = controller(platform, "flow-run:killed")
    dead.lease_s = 1.0
    record, _ = begin(dead, candidate, new_attempt=True)
    record, _, _ = look(dead, record)  # then the process "dies": no more looks, the lease runs out
    time.sleep(1.5)
    report = health_sweep("ner")
    assert report["rollout"] == record.rollout_id
    assert report["rollout_action"] == "taken over from flow-run:killed (lease expired)"
    assert report["rollout_phase"] == "promoted" and gov.state().champion == candidate
    assert {row["state"] for row in report["rows"]} <= {"ok", "firing", "no_data", "error"} and report["rows"]
    assert (platform["folder"] / "dashboard" / "index.html").exists()
    again = health_sweep("ner")
    assert again["rollout"] is None and again["recorded"] is None  # nothing changed: no new ledger entry


def test_with_the_metrics_store_unreadable_traffic_freezes_never_promotes_and_a_manual_rollback_completes(
    platform, monkeypatch
):
    from nerops.controller.manual import manual
    from nerops.rollout.actions import Command

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    champion = gov.state().champion
    candidate = platform["fault"]("slow", after=100000)  # a version of its own (its fault never arms here)
    ctl = controller(platform, "flow-run:blind")
    record, _ = begin(ctl, candidate, new_attempt=True)
    record, _, _ = look(ctl, record)  # readiness: smoke requests, no metrics needed
    assert record.state["weight"] == 5
    ctl.source = _Failing()  # the store goes down mid-rollout
    statuses = []
    for _ in range(4):
        time.sleep(ctl.plan.interval)
        record, verdict, _ = look(ctl, record)
        statuses.append(verdict.status)
    assert set(statuses) == {"error"} and record.state["frozen"] and record.state["weight"] == 5
    assert "the metrics source failed" in record.state["frozen"]
    rolled, _, how = manual(ctl, Command("rollback", ctl.owner, "metrics down, rolling back to be safe"))
    assert rolled.state["phase"] == "rolled_back" and gov.state().champion == champion
    view = ctl.control.read().state
    assert {k: v for k, v in view["traffic"].items() if v} == {record.stable: 100}


class _Failing:
    """A metrics source whose store is down: every read raises, as an unreachable Log Analytics would."""

    def series(self, *args, **kwargs):
        raise OSError("telemetry store unavailable")

    def watermark(self, endpoint):
        raise OSError("telemetry store unavailable")


def test_rollback_model_to_previous_moves_production_back_with_the_registry_stopped(
    platform, prefect_harness, monkeypatch
):
    from flows.rollback_model import rollback_model
    from nerops.controller.manual import previous_champion
    from nerops.params import RollbackRequest

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    before = gov.state().champion
    previous = previous_champion(controller(platform))
    assert previous and previous != before
    platform["registry"].stop()  # the registry server is down: the ledger and the endpoint's local copies serve
    try:
        lines = rollback_model(RollbackRequest(to="previous", endpoint="ner", reason="test: bad answers"))
    finally:
        platform["registry"].start()
    assert gov.state().champion == previous and gov.state().archived.get(before) == "rolled_back"
    view = controller(platform).control.read().state
    serving = [n for n, w in view["traffic"].items() if w]
    assert len(serving) == 1 and str(view["deployments"][serving[0]]["model_version"]) == previous
    assert any("archived (rolled_back)" in line for line in lines)
    assert rollback_model(RollbackRequest()) == ["nothing to do: give rollout=<id> or to=previous|VERSION"]


_RUN = """
import sys
from flows.progressive_rollout import progressive_rollout
from nerops.params import RolloutRequest
state = progressive_rollout(RolloutRequest(version=sys.argv[1], endpoint="ner", new_attempt=True), return_state=True)
print("final:", state.name, state.message)
"""

_RETRY = """
import sys
from prefect import get_client
from prefect.flow_engine import run_flow
from flows.progressive_rollout import progressive_rollout
with get_client(sync_client=True) as client:
    run = client.read_flow_run(sys.argv[1])
state = run_flow(progressive_rollout, flow_run=run, parameters=run.parameters, return_type="state")
print("final:", state.name, state.message)
"""


def _flow_process(platform, script: str, arg: str, log: Path):
    """A flow-run process of its own (the way a worker runs one), on the session's Prefect server."""
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    env = {
        **os.environ,
        "PREFECT_API_URL": str(PREFECT_API_URL.value()),
        "NEROPS_STATE_DIR": str(platform["folder"]),
        "NEROPS_ROLLOUT_PROFILE": "test",
        "PYTHONUNBUFFERED": "1",
    }
    root = Path(__file__).resolve().parents[1]
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-c", script, arg], cwd=root, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _kill_at(process, store: RecordStore, rollout_version: str, weight: int, log: Path, limit: float = 120.0):
    """``kill -9`` the process once the rollout's record says ``weight`` % (the step saved, its wait begun)."""
    import os
    import signal

    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()[-3000:]
        running = store.running("ner")
        if running is not None and running.version == rollout_version and running.state["weight"] == weight:
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            return running
        time.sleep(0.05)
    process.kill()
    raise AssertionError(f"the rollout never reached {weight} %: {log.read_text()[-3000:]}")


def test_kill_9_of_the_flow_run_then_a_prefect_retry_resumes_and_the_sweep_takes_over_after_the_lease(
    platform, prefect_harness, monkeypatch, tmp_path
):
    """Two real ``kill -9``: the retried flow run resumes without redoing a step; the sweep finishes the rest."""
    import json

    from prefect import get_client
    from prefect.states import AwaitingRetry

    from flows.health_sweep import health_sweep

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    candidate = platform["challenger"]()
    store = RecordStore(platform["folder"] / "rollouts")
    first = _flow_process(platform, _RUN, candidate, tmp_path / "first.log")
    killed = _kill_at(first, store, candidate, 25, tmp_path / "first.log")
    lease = json.loads((store.folder("ner") / ".prefect-lease.json").read_text())
    assert killed.owner.startswith("prefect:progressive-rollout/") and not killed.ended

    with get_client(sync_client=True) as client:  # what "Retry" in the Prefect UI does to the crashed run
        client.set_flow_run_state(lease["flow_run"], AwaitingRetry(), force=True)
    retry = _flow_process(platform, _RETRY, lease["flow_run"], tmp_path / "retry.log")
    again = _kill_at(retry, store, candidate, 50, tmp_path / "retry.log")
    said = (tmp_path / "retry.log").read_text()
    assert f"rollout {again.rollout_id} resumed" in said
    assert f"released the concurrency lease {lease['lease_id']}" in said
    assert again.owner == killed.owner and again.state["weights"] == [0, 5, 25, 50]  # 25 % not redone

    left = json.loads((store.folder("ner") / ".prefect-lease.json").read_text())  # the retry's, killed with it
    time.sleep(max(0.0, again.lease_until - time.time()) + 0.2)
    report = health_sweep("ner")
    assert report["rollout"] == again.rollout_id and report["rollout_action"].startswith("taken over from prefect:")
    assert report["released"] == f"released the concurrency lease {left['lease_id']} of {left['flow_run']}"
    with get_client(sync_client=True) as client:  # the next run need not wait for the dead run's slot
        assert client.read_global_concurrency_limit_by_name("rollout-ner").active_slots == 0
    assert report["rollout_phase"] == "promoted" and gov.state().champion == candidate
    record = store.load("ner", candidate, again.attempt)
    assert record.state["weights"] == [0, 5, 25, 50, 100]
    decisions = gov.ledger.find(kind="rollout_decision", rollout=record.rollout_id)
    steps = [e.evidence["weight"] for e in decisions if e.evidence["decision"] == "step"]
    assert steps == [5, 25, 50, 100]  # each step's traffic moved once
    owners = [e.evidence["owner"] for e in gov.ledger.find(rollout=record.rollout_id) if "owner" in e.evidence]
    assert owners[0] == killed.owner and len(owners) == 2 and owners[1] != killed.owner
    view = platform["endpoint"].client().read().state
    assert {k: v for k, v in view["traffic"].items() if v} == {record.candidate: 100}
    assert gov.ledger.verify().ok


def test_a_second_rollout_of_an_endpoint_is_refused_while_another_model_on_another_endpoint_rolls_out(
    platform, prefect_harness, monkeypatch, tiny_model, reseeded_model
):
    from flows.progressive_rollout import progressive_rollout
    from nerops.controller.manual import manual
    from nerops.first_deployment import deploy_first
    from nerops.lifecycle import open_governance
    from nerops.params import RolloutRequest
    from nerops.rollout.actions import Command

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    champion = gov.state().champion
    running = controller(platform, "flow-run:running")
    record, _ = begin(running, platform["challenger"](), new_attempt=True)
    refused = progressive_rollout(RolloutRequest(version="1", endpoint="ner"), return_state=True)
    assert refused.is_failed() and refused.name == "Refused"
    assert f"a rollout is already running on endpoint 'ner': {record.rollout_id}, owned by flow-run:running" in (
        refused.message
    )

    other = open_governance(Settings(state_dir=platform["folder"], registered_model="other-ner"), actor="tester@test")
    first = platform["register"](tiny_model, gov=other)
    ep2 = LocalEndpoint.start(Settings(state_dir=platform["folder"]), "ner2", export_interval=0.25)
    stop = threading.Event()
    try:
        deploy_first(other, ep2.client(), first, "blue", endpoint="ner2")
        second = platform["register"](reseeded_model, gov=other)
        corpus = texts(40)

        def traffic() -> None:
            while not stop.is_set():
                run_traffic(ep2.url, ep2.key, corpus, requests=30, concurrency=2, rate=30.0)

        threading.Thread(target=traffic, daemon=True).start()
        state = progressive_rollout(RolloutRequest(endpoint="ner2"), return_state=True)  # other-ner's challenger
        assert state.is_completed(), state.message
        assert f"rollout ner2/v{second}/1 promoted" in state.message
        assert other.state().champion == second and gov.state().champion == champion  # each model its own
        started = other.ledger.find(kind="rollout_started", rollout=f"ner2/v{second}/1")
        assert started and started[0].subject["model"] == "other-ner"
    finally:
        stop.set()
        ep2.stop()
    rolled, _, _ = manual(running, Command("abort", running.owner, "test: done"))
    assert rolled.state["phase"] == "aborted"


def test_a_run_whose_concurrency_lease_is_revoked_stops_like_a_crash_and_the_sweep_goes_on(
    platform, prefect_harness, monkeypatch
):
    import json

    from prefect import get_client

    from flows.health_sweep import health_sweep
    from flows.progressive_rollout import progressive_rollout
    from nerops.params import RolloutRequest

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    candidate = platform["challenger"]()
    store = RecordStore(platform["folder"] / "rollouts")
    ended = {}
    run = threading.Thread(
        target=lambda: ended.setdefault(
            "state",
            progressive_rollout(RolloutRequest(version=candidate, endpoint="ner", new_attempt=True), return_state=True),
        )
    )
    run.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        record = store.running("ner")
        if record is not None and record.version == candidate and record.state["weight"] == 5:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"the rollout never reached 5 %: {store.running('ner')}")
    lease = json.loads((store.folder("ner") / ".prefect-lease.json").read_text())
    with get_client(sync_client=True) as client:  # the server lets the lease go (as when it expired)
        client.release_concurrency_slots_with_lease(lease["lease_id"])
    run.join(60)
    state = ended["state"]
    assert state.is_failed() and state.name == "LeaseLost", state.message
    assert "concurrency lease of 'rollout-ner' is gone" in state.message
    stopped = store.load("ner", candidate, record.attempt)
    assert not stopped.ended and stopped.lease_until <= time.time()  # given up: nobody waits for it
    report = health_sweep("ner")
    assert report["rollout"] == stopped.rollout_id and report["rollout_phase"] == "promoted"
    assert store.load("ner", candidate, record.attempt).state["weights"] == [0, 5, 25, 50, 100]


def test_a_rollout_with_its_approval_step_waits_judging_until_the_flow_run_input_approves_it(
    platform, prefect_harness, monkeypatch
):
    from prefect import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateType
    from prefect.client.schemas.objects import StateType

    from flows.progressive_rollout import progressive_rollout
    from nerops.params import RolloutRequest
    from tasks.rollout import RolloutApproval

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = platform["gov"]
    candidate = platform["challenger"]()
    store = RecordStore(platform["folder"] / "rollouts")
    ended = {}
    request = RolloutRequest(version=candidate, endpoint="ner", new_attempt=True, approval=True)
    run = threading.Thread(target=lambda: ended.setdefault("state", progressive_rollout(request, return_state=True)))
    run.start()
    deadline = time.monotonic() + 60
    record = None
    while time.monotonic() < deadline and (record is None or record.state["phase"] != "awaiting_approval"):
        time.sleep(0.05)
        record = store.running("ner")
        record = record if record is not None and record.version == candidate else None
    assert record is not None and record.state["weight"] == 25, record  # the test profile asks before 50 %
    time.sleep(2.5)
    later = store.load("ner", candidate, record.attempt)
    assert later.state["phase"] == "awaiting_approval" and later.state["weight"] == 25
    assert later.evidence_lines >= record.evidence_lines + 2  # the judge keeps looking while it waits
    with get_client(sync_client=True) as client:
        running = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.RUNNING]))
            )
        )
    flow_run = next(r for r in running if f"/{r.name} " in record.owner)
    RolloutApproval(approver="lead@test", reason="change ticket 7").send_to(flow_run.id)
    run.join(60)
    state = ended["state"]
    assert state.is_completed(), state.message
    done = store.load("ner", candidate, record.attempt)
    assert done.state["weights"] == [0, 5, 25, 50, 100] and gov.state().champion == candidate
    assert done.state["approval"] == "approve by lead@test (flow-run input): change ticket 7"
    kinds = [e.evidence["decision"] for e in gov.ledger.find(kind="rollout_decision", rollout=record.rollout_id)]
    assert kinds.count("awaiting_approval") == 1 and kinds.count("approved") == 1
    assert kinds.index("awaiting_approval") < kinds.index("approved")


def test_nerops_rollout_approve_reaches_a_live_owner_waiting_at_its_approval_step(platform, monkeypatch):
    from click.testing import CliRunner

    from nerops.cli import main

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    monkeypatch.setenv("NEROPS_ACTOR", "lead@host")
    candidate = platform["challenger"]()
    owner = controller(platform, "flow-run:owner")
    record, _ = begin(owner, candidate, new_attempt=True, approval=True)
    while record.state["phase"] != "awaiting_approval":
        time.sleep(owner.plan.interval)
        record, _, _ = look(owner, record)
        assert not record.ended, record.state["ending"]
    shown = CliRunner().invoke(main, ["rollout", "status", "--endpoint", "ner"])
    assert shown.exit_code == 0 and "approval   waiting, " in shown.output, shown.output
    result = {}
    driver = threading.Thread(target=lambda: result.setdefault("end", drive(owner, record)))
    driver.start()
    approved = CliRunner().invoke(main, ["rollout", "approve", "--endpoint", "ner", "--reason", "ticket 9"])
    driver.join(90)
    assert approved.exit_code == 0, approved.output
    assert "approve: applied by the owner flow-run:owner" in approved.output
    done, _ = result["end"]
    assert done.state["phase"] == "promoted" and done.state["approval"] == "approve by cli:lead@host: ticket 9"


def test_rollout_report_of_a_rolled_back_rollout_names_its_evidence_and_reads_the_same_without_telemetry(
    platform, monkeypatch, tmp_path
):
    from click.testing import CliRunner

    from nerops.cli import main

    folder = platform["folder"]
    monkeypatch.setenv("NEROPS_STATE_DIR", str(folder))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    store = RecordStore(folder / "rollouts")

    def deciding(record) -> dict:
        return next(line for line in evidence.read(store.evidence_path(record)) if line["phase"] == "rolled_back")

    def by_a_metric(record) -> bool:  # rolled back by the judge on a metric (not by hand, not by a hard failure)
        if record.state["phase"] != "rolled_back" or not record.state["ending"].startswith("unhealthy"):
            return False
        return any(m["status"] == "unhealthy" for m in deciding(record).get("look", {}).get("metrics", []))

    record = next((r for r in store.all("ner") if by_a_metric(r)), None)  # one the bad-candidate tests left
    if record is None:  # run alone: roll a slow candidate back first
        ctl = controller(platform, first_canary=50)
        record, _ = begin(ctl, platform["fault"]("slow", after=0, delay_ms=150))
        record, _ = drive(ctl, record)
        assert by_a_metric(record), record.state.get("ending")
    decided = deciding(record)
    unhealthy = [m for m in decided["look"]["metrics"] if m["status"] == "unhealthy"]
    rid = record.rollout_id
    seqs = [
        e.seq
        for e in platform["gov"].ledger.entries()
        if e.subject.get("rollout") == rid or e.evidence.get("correlation_id") == rid
    ]
    kinds = [e.kind for e in platform["gov"].ledger.find(rollout=rid)]
    assert kinds[0] == "rollout_started" and kinds[-1] == "rollout_finished" and "rollback" in kinds

    # stdout only: the fixture's traffic thread prints its progress to stderr, which CliRunner captures too
    shown = CliRunner().invoke(main, ["rollout", "report", rid, "--out", "-"])
    assert shown.exit_code == 0, shown.output
    text = shown.stdout
    assert f"# Rollout {rid}: rolled_back" in text and record.state["ending"][:80] in text
    for m in unhealthy:  # the metric, the null, the e-value and its threshold, the values, the samples: as numbers
        start = f"| {m['metric']} | {m['mode']} | {m['tested']} | unhealthy | "
        row = next((line for line in text.splitlines() if line.startswith(start)), None)
        assert row is not None, (start, text)
        e_value, values, samples = row[len(start) :].split(" | ")[0], row.split(" | ")[5:7], row.split(" | ")[7]
        shown = [*e_value.split(" / "), *values, *samples.replace(" (min", " /").rstrip(")").split(" / ")]
        wanted = ("e_value", "threshold", "candidate", "stable", "candidate_samples", "stable_samples", "min_samples")
        assert [float(x) for x in shown] == [pytest.approx(float(m[key]), rel=1e-5) for key in wanted], row
        assert m["candidate"] is not None and m["candidate_samples"] >= m["min_samples"]
    assert f"seq {min(seqs)}..{max(seqs)} ({len(seqs)} entries)" in text
    assert "ledger ok: " in text and "evidence file matches the ledger" in text and "MISMATCH" not in text
    for query in decided["look"]["queries"].values():
        assert query.splitlines()[0] in text
    answered = decided["answered"]["live"]
    blast = answered["candidate"] / (answered["candidate"] + answered["stable"])
    assert 0 < blast < 1 and f"{100 * blast:.1f} % of live" in text

    listed = CliRunner().invoke(main, ["rollout", "list", "--endpoint", "ner"])
    assert listed.exit_code == 0, listed.output
    row = next(line for line in listed.stdout.splitlines() if line.startswith(f"{rid} "))
    assert row.split()[1] == "rolled_back" and f"{100 * blast:.1f} %" in row
    assert row.split()[-1] == str(answered["candidate"])

    # the telemetry gone, and Prefect's database: only the record, the evidence file and the ledger are copied
    copy = tmp_path / "after-retention"
    shutil.copytree(folder / "rollouts", copy / "rollouts", ignore=shutil.ignore_patterns(".lock"))
    shutil.copytree(folder / "ledger", copy / "ledger", ignore=shutil.ignore_patterns("*.lock"))
    assert (folder / "telemetry").exists() and not (copy / "telemetry").exists()
    monkeypatch.setenv("NEROPS_STATE_DIR", str(copy))
    again = CliRunner().invoke(main, ["rollout", "report", rid, "--out", "-"])
    assert again.exit_code == 0, again.output
    assert again.stdout == text
    assert CliRunner().invoke(main, ["rollout", "list", "--endpoint", "ner"]).stdout == listed.stdout


def test_probes_bring_a_quiet_rollout_from_no_data_to_a_decision_and_never_count_as_live(platform):
    from dataclasses import replace

    from nerops.controller.probes import Prober
    from nerops.rollout.policy import Probes
    from nerops.telemetry import TelemetryStore

    version = platform["challenger"]()
    ctl = controller(platform)
    ctl = replace(ctl, plan=replace(ctl.plan, probes=Probes(rate=10)))
    with platform["quiet"](), Prober(ctl.control.url, ctl.control.key, platform["corpus"], ctl.plan.probes) as prober:
        began = time.time()
        record, _ = begin(ctl, version, new_attempt=True)  # an earlier test may have rolled it out
        looks: list[tuple[str, str, bool]] = []  # (step kind, verdict, probing after it)
        why: list[str] = []  # the reason of each look neither healthy nor without data
        frozen: list[str] = []  # those of the error looks among them
        while not record.ended and len(looks) < 60:
            time.sleep(ctl.plan.interval)
            looked = ctl.plan.steps[record.state["step"]].kind  # the step this look judges
            record, verdict, _ = look(ctl, record)
            kind = ctl.plan.steps[record.state["step"]].kind  # the step it is in now
            judged = len([k for k, _, _ in looks if k != "readiness"])
            # the first three judged looks without probes: live traffic alone, which is none
            probing = judged >= 3 and prober.follow(kind, record.state["phase"], verdict.status, record.candidate,
                                                    record.stable)  # fmt: skip
            looks.append((looked, verdict.status, probing))
            if verdict.status not in ("healthy", "no_data"):
                why.append(f"look {len(looks)}: {verdict.status}: {verdict.reason}")
                if verdict.status == "error":
                    frozen.append(why[-1])
        prober.aim(None)
        time.sleep(1.5)  # still quiet while the endpoint exports the last probes (every 0.25 s)
        ended = time.time()
    if frozen:  # an error look froze traffic on the telemetry's word (loss, a watermark behind): not a verdict
        said = f"the probed rollout was frozen {len(frozen)} time(s) by its telemetry: {'; '.join(frozen)}"
        warnings.warn(said, stacklevel=1)
    judged = [(v, p) for k, v, p in looks if k != "readiness" and v != "error"]
    assert [v for v, _ in judged[:4]] == ["no_data"] * 4, (looks, why)  # 3 without probes, then the one probes began
    assert judged[3][1] is True and prober.counts.sent > 0 and prober.counts.failed == 0
    first_decision = next(v for v, _ in judged[4:] if v != "no_data")
    assert first_decision == "healthy", (looks, why)
    assert record.state["phase"] == "promoted" and record.state["weights"] == [0, 5, 25, 50, 100], (looks, why)
    assert platform["gov"].state().champion == version

    with TelemetryStore(platform["folder"] / "telemetry" / "telemetry.db") as store:

        def requests(deployment: str, traffic: tuple[str, ...]) -> int:
            series = store.metric_series("system", "request_count", began, ended, 3600, by=None,
                                         deployment=deployment, traffic=traffic)  # fmt: skip
            return int(sum(p.aggregate.sum for p in series))

        assert requests(record.candidate, ("live",)) == 0  # probes never count as live requests
        assert requests(record.stable, ("live",)) == 0
        assert requests(record.candidate, ("probe",)) == prober.counts.sent  # each probe, once on each arm
        assert requests(record.stable, ("probe",)) == prober.counts.sent
    lines = evidence.read(ctl.store.evidence_path(record))
    decided = next(line for line in lines if line.get("answered") and line["look"]["status"] == "healthy")
    assert decided["answered"]["live"] == {"candidate": 0, "stable": 0}
    assert decided["answered"]["probe"]["candidate"] >= 5 and decided["answered"]["probe"]["stable"] >= 5
    probed = [m for m in decided["look"]["metrics"] if m["status"] != "no_data"]
    assert probed and all(m["candidate_samples"] >= m["min_samples"] for m in probed if m["mode"] == "enforce")


def test_the_flow_probes_a_quiet_rollout_to_promotion_and_refuses_probe_resumes_it_cannot_read(
    platform, prefect_harness, monkeypatch, tmp_path, synthetic_data
):
    import yaml

    from flows.progressive_rollout import progressive_rollout
    from nerops.params import RolloutRequest
    from nerops.rollout.policy import default_policy_path

    def policy_with(probes: dict) -> Path:
        raw = yaml.safe_load(default_policy_path().read_text())
        raw["profiles"]["test"]["probes"] = probes
        path = tmp_path / f"policy-{len(list(tmp_path.glob('policy-*')))}.yaml"
        path.write_text(yaml.safe_dump(raw))
        return path

    monkeypatch.setenv("NEROPS_STATE_DIR", str(platform["folder"]))
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    version = platform["challenger"]()
    store = RecordStore(platform["folder"] / "rollouts")
    before = [r.rollout_id for r in store.all("ner")]
    monkeypatch.setenv("NEROPS_ROLLOUT_POLICY", str(policy_with({"rate": 10, "folder": str(tmp_path / "none")})))
    refused = progressive_rollout(RolloutRequest(endpoint="ner", version=version), return_state=True)
    assert refused.name == "Refused" and "probe traffic of profile test: probe resumes from" in refused.message
    assert [r.rollout_id for r in store.all("ner")] == before  # nothing began

    monkeypatch.setenv("NEROPS_ROLLOUT_POLICY", str(policy_with({"rate": 10, "folder": str(synthetic_data[1])})))
    with platform["quiet"]():
        request = RolloutRequest(endpoint="ner", version=version, new_attempt=True)
        state = progressive_rollout(request, return_state=True)
    assert state.is_completed(), state.message
    assert platform["gov"].state().champion == version
    sent = int(state.message.rsplit("; ", 1)[1].split()[0])
    assert state.message.endswith(f"; {sent} probes sent, {sent} answered 200, 0 failed") and sent > 0, state.message
