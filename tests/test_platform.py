"""The local platform as real processes (``nerops platform up``): a Prefect server, a process worker, the endpoint and
the webhook receiver, shared by every test here; the deployments from ``prefect deploy --all``; the automations.

Training runs the test profile's tiny config on the real zips (the pinned loader accepts no other data).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import psutil
import pytest

from nerops.serving.client import free_port
from nerops.triggers.github import sign
from tests.conftest import SHARED_DATA, approve_synthetic, model_copy, needs_real_data

pytestmark = [needs_real_data, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
SECRET = "platform-test-secret"
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
SWEEP_EVERY_S = 120


def nerops(*args: str, env: dict, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nerops.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


def head_commit() -> str:
    return subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()


@pytest.fixture(scope="module")
def live(tmp_path_factory, tiny_model: Path, reseeded_model: Path, synthetic_data, synthetic_personal):
    """The platform up in a state folder of its own; v1 champion on blue, v2 approved; ``traffic()`` live traffic."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from nerops.data import read_corpus
    from nerops.first_deployment import deploy_first
    from nerops.gate import GatePolicy
    from nerops.lifecycle import open_governance
    from nerops.serving.factory import endpoint_control
    from nerops.serving.traffic import SteadyTraffic
    from nerops.settings import Settings
    from tests.test_endpoint import texts

    state = tmp_path_factory.mktemp("platform-state")
    ports = {"prefect": free_port(), "endpoint": free_port(), "webhook": free_port()}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NEROPS_"))}
    env |= {
        "NEROPS_STATE_DIR": str(state),
        "PREFECT_HOME": str(state / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "NEROPS_ROLLOUT_PROFILE": "test",
        "NEROPS_DATA_DIR": str(SHARED_DATA),
        "NEROPS_GITHUB_WEBHOOK_SECRET": SECRET,
        "NEROPS_WEBHOOK_MAX_BODY_BYTES": "65536",
        "NEROPS_TELEMETRY_EXPORT_INTERVAL_S": "0.25",  # as the rollout tests: the test profile looks every 1 s
        "NEROPS_PLATFORM_CRASH_AFTER_S": "60",  # two heartbeats (90 s by default): the kill test waits for it
        "NEROPS_HEALTH_SWEEP_INTERVAL_S": str(SWEEP_EVERY_S),  # 300 by default: the last test waits for a sweep
        "NEROPS_PROJECT_DIR": str(ROOT),
    }
    up = nerops(
        "platform",
        "up",
        "--prefect-port",
        str(ports["prefect"]),
        "--endpoint-port",
        str(ports["endpoint"]),
        "--webhook-port",
        str(ports["webhook"]),
        env=env,
        timeout=900,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    api = f"http://127.0.0.1:{ports['prefect']}/api"
    mp = pytest.MonkeyPatch()
    for key in ("NEROPS_STATE_DIR", "NEROPS_ROLLOUT_PROFILE", "NEROPS_DATA_DIR"):
        mp.setenv(key, env[key])
    try:
        with temporary_settings({PREFECT_API_URL: api}):
            gov = open_governance(actor="tester@test")
            docs = read_corpus(synthetic_data[1])

            def register(model: Path) -> str:
                lenient = GatePolicy(min_micro_f1=0.0, default_min_label_f1=0.0)
                return approve_synthetic(gov, model, docs, synthetic_personal, lenient)

            settings = Settings()
            v1 = register(tiny_model)
            deploy_first(gov, endpoint_control(settings), v1, "blue", endpoint=settings.endpoint_of())
            v2 = register(reseeded_model)
            folder = state / "endpoints" / settings.endpoint_of()
            url = (folder / "endpoint.url").read_text().strip()
            key = json.loads((folder / "keys.json").read_text())["primary"]
            corpus = texts(40)
            yield {
                "state": state,
                "env": env,
                "api": api,
                "ports": ports,
                "gov": gov,
                "versions": (v1, v2),
                "register": register,
                "models": (tiny_model, reseeded_model),
                "traffic": lambda: SteadyTraffic(url, key, corpus, rate=40.0),  # while a rollout needs a judge
                "endpoint": settings.endpoint_of(),
                "webhook": f"http://127.0.0.1:{ports['webhook']}/github",
            }
    finally:
        status = state / "platform" / "platform.json"
        if status.exists():
            nerops("platform", "down", env=env, timeout=120)
        mp.undo()


@pytest.fixture(autouse=True)
def _platform_state(request, monkeypatch):
    if "live" in request.fixturenames:
        live = request.getfixturevalue("live")
        monkeypatch.setenv("NEROPS_STATE_DIR", str(live["state"]))
        monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
        monkeypatch.setenv("NEROPS_DATA_DIR", str(SHARED_DATA))
        monkeypatch.setenv("PREFECT_API_URL", live["api"])
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings({PREFECT_API_URL: live["api"]}):
            yield
    else:
        yield


# --- talking to the platform's Prefect server ------------------------------------------------------------------


def client():
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


def create_run(deployment: str, parameters: dict | None = None):
    """A run of ``flow/deployment`` as the UI's "Run" button makes it (no parameters: the deployment's defaults)."""
    with client() as c:
        dep = c.read_deployment_by_name(deployment)
        return c.create_flow_run_from_deployment(dep.id, parameters=parameters or {})


def runs_of(deployment: str) -> list:
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with client() as c:
        dep = c.read_deployment_by_name(deployment)
        return c.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])))


def wait_final(run_id, limit: float = 300.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        with client() as c:
            run = c.read_flow_run(run_id)
        if run.state and run.state.type.value in FINAL:
            return run
        time.sleep(1.0)
    raise AssertionError(f"flow run {run_id} not final after {limit:g} s: {run.state}")


def _read_logs(run_id) -> list:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.client.schemas.sorting import LogSort

    found: list = []
    with client() as c:
        while True:  # the API answers at most 200 at a time
            page = c.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
                limit=200,
                offset=len(found),
                sort=LogSort.TIMESTAMP_ASC,
            )
            found += page
            if len(page) < 200:
                return found


def logs_of(run_id) -> str:
    """A finished run's logs, once no more arrive (a run's process sends its last logs in batches after its end)."""
    found, seen, stable_since = [], -1, time.monotonic()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        found = _read_logs(run_id)
        if len(found) != seen:
            seen, stable_since = len(found), time.monotonic()
        elif time.monotonic() - stable_since > 2.5:
            break
        time.sleep(0.5)
    return "\n".join(entry.message for entry in found)


def completed(run_id, limit: float = 300.0):
    run = wait_final(run_id, limit)
    assert run.state.type.value == "COMPLETED", f"{run.name}: {run.state}\n{logs_of(run_id)[-4000:]}"
    return run


# --- the tests --------------------------------------------------------------------------------------------------


def test_up_after_a_crash_stops_what_the_dead_platform_left_by_pid_and_start_time(tmp_path):
    """A platform whose supervisor was killed left its state file, a server still holding its port and a process
    that server started; another process now has a pid the file names. ``up`` stops the platform's leftovers (not the
    stranger), frees the port, removes the file, then goes on: here it stops at the port the test holds itself."""
    import socket

    from nerops.platform.supervisor import alive, process_record

    def record(proc) -> dict:
        return process_record(proc.pid)

    gone = subprocess.Popen(["true"])
    dead_supervisor = {"pid": gone.pid, "created": psutil.Process(gone.pid).create_time()}
    gone.wait()
    server_port, endpoint_port, webhook_port = free_port(), free_port(), free_port()
    listener = (
        "import socket, subprocess, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {server_port}))\n"
        "s.listen(); subprocess.Popen(['sleep', '600']); time.sleep(600)\n"
    )
    server = subprocess.Popen([sys.executable, "-c", listener])
    stranger = subprocess.Popen(["sleep", "600"])
    holder = socket.socket()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not psutil.Process(server.pid).children():
            time.sleep(0.05)
        (child,) = psutil.Process(server.pid).children()
        leftover = record(child)
        while time.monotonic() < deadline and not any(c.laddr.port == server_port for c in server_connections(server)):
            time.sleep(0.05)
        holder.bind(("127.0.0.1", webhook_port))
        holder.listen()
        folder = tmp_path / "platform"
        folder.mkdir()
        services = {"server": {**record(server), "url": f"http://127.0.0.1:{server_port}/api", "restarts": 0}}
        stale = {"pid": stranger.pid, "created": record(stranger)["created"] - 1000.0}  # the pid, another process
        status = {
            "phase": "up", "supervisor": dead_supervisor, "services": services,
            "descendants": [leftover, stale],
        }  # fmt: skip
        (folder / "platform.json").write_text(json.dumps(status))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "NEROPS_"))}
        env |= {"NEROPS_STATE_DIR": str(tmp_path), "PREFECT_HOME": str(tmp_path / "prefect")}
        up = nerops(
            "platform", "up", "--prefect-port", str(server_port), "--endpoint-port", str(endpoint_port),
            "--webhook-port", str(webhook_port), env=env,
        )  # fmt: skip
        assert up.returncode == 1, up.stdout + up.stderr
        assert "cleaned up after the last platform (up): 0 processes left" in up.stdout
        assert f"ports in use on 127.0.0.1: webhook {webhook_port} (choose others" in up.stderr  # only the test's
        assert server.wait(5) is not None and not alive(leftover)  # a zombie no one reaped yet counts as gone
        assert stranger.poll() is None  # its pid was in the file, its start time was not
        assert not (folder / "platform.json").exists()
        with socket.socket() as again:
            again.bind(("127.0.0.1", server_port))  # the dead platform's port is free again
    finally:
        holder.close()
        for proc in (server, stranger):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(5)


def server_connections(proc) -> list:
    with contextlib.suppress(psutil.Error):
        return psutil.Process(proc.pid).net_connections(kind="tcp")
    return []


def test_the_platform_says_where_each_process_listens_and_logs(live):
    status = nerops("platform", "status", env=live["env"])
    assert status.returncode == 0, status.stdout + status.stderr
    for name in ("server", "endpoint", "worker", "webhook"):
        row = next(line for line in status.stdout.splitlines() if line.strip().startswith(name))
        assert "healthy" in row and "log " in row
    assert f"127.0.0.1:{live['ports']['webhook']}/github" in status.stdout
    body = json.loads((live["state"] / "platform" / "platform.json").read_text())
    assert body["phase"] == "up" and body["api"] == live["api"]
    with client() as c:  # the set-up's work pool, limit and automations
        assert c.read_work_pool("local").type == "process"
        assert c.read_global_concurrency_limit_by_name(f"rollout-{live['endpoint']}").limit == 1
        names = {a.name for a in c.read_automations()}
    assert {"nerops-crash-zombie-flows", "nerops-rollback-on-crash"} <= names


def _flow_run_pid(run_id) -> int:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with client() as c:
            run = c.read_flow_run(run_id)
        if run.infrastructure_pid:
            return int(str(run.infrastructure_pid).rsplit(":", 1)[-1])
        time.sleep(0.5)
    raise AssertionError(f"flow run {run_id} has no process")


def _pause_sweeps(live, paused: bool) -> None:
    with client() as c:
        dep = c.read_deployment_by_name("health-sweep/health-sweep")
        if paused:
            c.pause_deployment(dep.id)
        else:
            c.resume_deployment(dep.id)


def test_the_health_sweep_schedule_makes_runs_at_the_set_interval_by_itself(live):
    """The set-up set the sweep's interval (prefect.yaml's 300 s replaced by the setting's); the scheduler made the next
    runs at once (one of them runs: checked before down)."""
    deadline = time.monotonic() + 120
    scheduled = []
    while time.monotonic() < deadline and len(scheduled) < 2:
        scheduled = [r for r in runs_of("health-sweep/health-sweep") if r.auto_scheduled]
        time.sleep(1)
    times = sorted(r.expected_start_time for r in scheduled)
    assert any(abs((b - a).total_seconds() - SWEEP_EVERY_S) < 1 for a, b in zip(times, times[1:], strict=False)), times


def test_kill_9_of_the_rollout_and_the_worker_is_crashed_by_the_zombie_automation_and_rolled_back(live):
    """The flow-run process and the worker killed: heartbeats stop, the run is marked Crashed, the crash automation
    runs rollback-model rollout=<id>, traffic ends on stable; the supervisor restarted the worker meanwhile."""
    from nerops.controller.records import RecordStore
    from nerops.serving.factory import endpoint_control
    from nerops.settings import Settings

    gov, state = live["gov"], live["state"]
    stable_version = gov.state().champion
    candidate = _variant(live, state / "test-variants")
    _pause_sweeps(live, True)  # the sweep would take the dead rollout over: here the crash automation acts
    try:
        run = create_run("progressive-rollout/progressive-rollout", {"request": {"version": candidate}})
        store = RecordStore(state / "rollouts")
        deadline = time.monotonic() + 240
        record = None
        while time.monotonic() < deadline:
            record = store.running(live["endpoint"])
            if record is not None and record.version == candidate and record.state["weight"] > 0:
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"the rollout never took traffic: {record}\n{logs_of(run.id)[-3000:]}")
        with client() as c:
            tags = c.read_flow_run(run.id).tags
        assert f"rollout:{record.rollout_id}" in tags
        status = json.loads((state / "platform" / "platform.json").read_text())
        worker_pid = status["services"]["worker"]["pid"]
        flow_pid = _flow_run_pid(run.id)
        os.kill(flow_pid, signal.SIGKILL)
        os.kill(worker_pid, signal.SIGKILL)
        crashed = wait_final(run.id, 300)
        assert crashed.state.type.value == "CRASHED", crashed.state
        assert (crashed.state.message or "").startswith("No heartbeat for 60 s")
        deadline = time.monotonic() + 240
        rollback = None
        while time.monotonic() < deadline and rollback is None:
            rollback = next(
                (r for r in runs_of("rollback-model/rollback-model") if r.parameters.get("request", {}).get("rollout")
                 == record.rollout_id),
                None,
            )  # fmt: skip
            time.sleep(1)
        assert rollback is not None, "the crash automation ran no rollback-model"
        completed(rollback.id, 300)
        view = endpoint_control(Settings()).read().state
        stable = record.stable
        assert {k: v for k, v in view["traffic"].items() if v} == {stable: 100}
        assert not any(view.get("mirror", {}).values())
        after = json.loads((state / "platform" / "platform.json").read_text())
        assert after["services"]["worker"]["pid"] != worker_pid and after["services"]["worker"]["restarts"] >= 1
        assert gov.state().champion == stable_version
    finally:
        _pause_sweeps(live, False)


def test_each_deployment_works_with_its_defaults(live):
    """No parameters: each passes validation, does its first side effect, ends in its documented state."""
    gov = live["gov"]
    challenger = _variant(live, live["state"] / "test-variants")  # approved: the challenger, never rolled out
    with live["traffic"]():
        rollout = completed(create_run("progressive-rollout/progressive-rollout").id, 300)
    assert gov.state().champion == challenger  # the challenger, rolled out step by step and promoted
    assert f"rollout {live['endpoint']}/v{challenger}/1 promoted" in rollout.state.message

    before = {v.version for v in gov.registry.list_versions()}
    names = ("retrain-model", "gate-model", "rollback-model", "on-github-event", "health-sweep")
    runs = {name: create_run(f"{name}/{name}").id for name in names}  # side by side, as a worker runs them
    for name, run_id in runs.items():
        if name != "retrain-model":  # the longest: it trains while the next tests run (checked before down)
            completed(run_id, 600)
    live["default_retrain"] = (runs["retrain-model"], before)
    assert "nothing to do: give rollout=<id>" in logs_of(runs["rollback-model"])
    assert "nothing to do: this flow runs from the webhook receiver's event" in logs_of(runs["on-github-event"])
    gated = logs_of(runs["gate-model"])
    assert "nothing to gate" in gated or "passed" in gated.lower() or "failed" in gated.lower(), gated[-2000:]
    assert f"{live['endpoint']}: firing" in logs_of(runs["health-sweep"])


def _push(commit: str, files: list[str], ref: str = "refs/heads/main") -> bytes:
    change = {"id": commit, "added": [], "removed": [], "modified": files}
    return json.dumps(
        {
            "ref": ref,
            "before": "1" * 40,
            "after": commit,
            "created": False,
            "deleted": False,
            "forced": False,
            "repository": {"full_name": "nerops/nerops", "default_branch": "main", "pushed_at": int(time.time())},
            "pusher": {"name": "octocat"},
            "commits": [change],
            "head_commit": change,
        }
    ).encode()


def retrains_of(commit: str) -> list:
    runs = runs_of("retrain-model/retrain-model")
    return [r for r in runs if r.parameters.get("request", {}).get("commit") == commit]


def _deliver(live, body: bytes, *, event: str = "push", delivery: str | None = None, signature: str | None = "sign"):
    headers = {"Content-Type": "application/json", "X-GitHub-Event": event}
    headers["X-GitHub-Delivery"] = delivery or str(uuid.uuid4())
    if signature == "sign":
        headers["X-Hub-Signature-256"] = sign(SECRET, body)
    elif signature is not None:
        headers["X-Hub-Signature-256"] = signature
    answer = httpx.post(live["webhook"], content=body, headers=headers, timeout=15)
    return answer.status_code, answer.json()


def test_the_webhook_receiver_answers_each_delivery_as_documented_and_one_signed_push_gives_one_retrain(live):
    """On the running platform: refusals and ignored pushes create no run; a signed push touching a model config
    creates one on-github-event run and one retrain-model run of the pushed commit, which the worker completes."""
    head = head_commit()
    wanted = _push(head, ["src/nerops/model/config.py"])
    retrains_before = len(runs_of("retrain-model/retrain-model"))
    events_before = {r.id for r in runs_of("on-github-event/on-github-event")}
    replayed = str(uuid.uuid4())
    ignored = _push(head, ["README.md", "src/nerops/serving/endpoint.py"])
    assert _deliver(live, ignored, delivery=replayed)[1]["verdict"] == "ignored"
    cases = [  # (what, answer status, verdict, the delivery)
        ("bad signature", 403, "refused", dict(body=wanted, signature=sign("another-secret", wanted))),
        ("missing signature", 401, "refused", dict(body=wanted, signature=None)),
        ("malformed signature", 400, "refused", dict(body=wanted, signature="sha256=xyz")),
        ("replayed delivery", 200, "duplicate", dict(body=ignored, delivery=replayed)),
        ("the same body, a new id", 200, "duplicate", dict(body=ignored)),
        ("malformed JSON", 400, "refused", dict(body=b'{"ref": "refs/heads/main",')),
        ("oversized body", 413, "refused", dict(body=b" " * 70_000 + wanted)),
        ("unknown event", 400, "refused", dict(body=wanted, event="issues")),
        ("no training path", 200, "ignored", dict(body=_push(head, ["docs/architecture.md"]))),
        ("another branch", 200, "ignored", dict(body=_push(head, ["src/nerops/model/config.py"], "refs/heads/x"))),
    ]
    for what, status, verdict, kwargs in cases:
        got = _deliver(live, kwargs.pop("body"), **kwargs)
        assert (got[0], got[1]["verdict"]) == (status, verdict), f"{what}: {got}"
    time.sleep(3)  # an event would have started a run by now (0.35 s measured)
    assert {r.id for r in runs_of("on-github-event/on-github-event")} == events_before
    assert len(runs_of("retrain-model/retrain-model")) == retrains_before

    delivery = str(uuid.uuid4())
    status, answer = _deliver(live, wanted, delivery=delivery)
    assert (status, answer["verdict"]) == (202, "retrain"), answer
    deadline, started = time.monotonic() + 120, []
    while time.monotonic() < deadline and not started:
        started = [r for r in runs_of("on-github-event/on-github-event") if r.id not in events_before]
        time.sleep(0.5)
    (on_event,) = started
    assert on_event.parameters["push"]["delivery"] == delivery and on_event.parameters["push"]["commit"] == head
    completed(on_event.id, 300)
    retrains = retrains_of(head)
    assert len(retrains) == 1, retrains
    assert _deliver(live, wanted, delivery=delivery)[1]["verdict"] == "duplicate"
    again = nerops("trigger", "retrain", "--commit", head, env={**live["env"], "PREFECT_API_URL": live["api"]})
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["flow_run"] == str(retrains[0].id)  # the workflow's call: the same run
    (entry,) = live["gov"].ledger.find(kind="retrain_requested", commit=head)
    assert entry.evidence["delivery"] == delivery and entry.evidence["matched"] == ["src/nerops/model/config.py"]
    log = (live["state"] / "webhook" / "deliveries.log").read_text()
    assert delivery in log and "config.py" not in log  # ids and verdicts, never the payload
    live["pushed"] = (head, retrains[0].id)  # trained while the next tests run: see the last test before down


def _variant(live, folder: Path) -> str:
    """A new approved version: a copy of the tiny model (a version of its own)."""
    copy = folder / f"variant-{uuid.uuid4().hex[:8]}"
    return live["register"](model_copy(live["models"][0], copy, f"{copy.name}: a copy for a platform test"))


def test_a_rollout_whose_owner_died_is_taken_over_by_a_health_sweep_run(live):
    from nerops.controller.factory import controller
    from nerops.controller.records import RecordStore
    from nerops.controller.run import begin

    gov, state = live["gov"], live["state"]
    candidate = _variant(live, state / "test-variants")
    ctl = controller(live["endpoint"], "a-dead-owner@test")
    record, _ = begin(ctl, candidate)
    time.sleep(4)  # the test profile's lease (3 s) runs out: the owner is gone
    completed(create_run("health-sweep/health-sweep").id, 300)
    store = RecordStore(state / "rollouts")
    deadline = time.monotonic() + 120  # a scheduled sweep may have come first: then it drives the rollout to its end
    while not (ended := store.load(live["endpoint"], candidate, record.attempt)).ended and time.monotonic() < deadline:
        time.sleep(1)
    assert ended.owner.startswith("prefect:health-sweep/"), ended.owner  # a sweep run took it over
    owners = [e.evidence["owner"] for e in gov.ledger.find(rollout=record.rollout_id) if "owner" in e.evidence]
    assert owners[0] == "a-dead-owner@test" and owners[-1] == ended.owner
    assert ended.ended, ended.state  # driven to its end by the same judge (no live traffic here: aborted at a deadline)
    assert gov.ledger.verify().ok


def test_retrain_model_with_its_defaults_trains_the_profiles_config_and_registers_a_version(live):
    """The retrain-model run the defaults test started with no parameters, finished meanwhile."""
    assert "default_retrain" in live, "the defaults test started no retrain-model run"
    run_id, before = live["default_retrain"]
    import re

    from nerops.model.config import get_config

    completed(run_id, 600)
    gov, log = live["gov"], logs_of(run_id)
    said = re.search(r"\bv(\d+) (PASSED|FAILED) the gate", log)
    assert said, log[-3000:]
    version = said.group(1)
    assert version not in before and gov.ledger.find(kind="gate", version=version)  # registered, then gated
    (registered,) = gov.ledger.find(kind="registration", version=version)
    assert registered.evidence["lineage"]["config_hash"] == get_config("tiny").config_hash()  # the test profile's


def test_the_pushed_commit_is_trained_once_by_the_worker_with_both_commits_in_its_lineage(live):
    """The retrain-model run the signed push started (above), finished meanwhile: trained at the pushed commit."""
    assert "pushed" in live, "the webhook test started no retrain"
    head, run_id = live["pushed"]
    run = completed(run_id, 600)
    assert len(retrains_of(head)) == 1
    gov = live["gov"]
    trained = [e for e in gov.ledger.find(kind="training") if e.evidence.get("requested_commit") == head]
    assert len(trained) == 1 and trained[0].evidence["git_commit"] == head
    (version,) = [v for v in gov.registry.list_versions() if v.lineage.get("requested_commit") == head]
    assert version.lineage["git_commit"] == head, run.name


def test_a_scheduled_health_sweep_run_ran_by_itself(live):
    """The first scheduled sweep is due SWEEP_EVERY_S after the deployment (or after the kill test resumed the paused
    schedule): the tests above have taken that."""
    deadline = time.monotonic() + 420
    while time.monotonic() < deadline:
        scheduled = [r for r in runs_of("health-sweep/health-sweep") if r.auto_scheduled]
        if any(r.state and r.state.type.value == "COMPLETED" for r in scheduled):
            break
        time.sleep(2)
    else:
        raise AssertionError(f"no scheduled health-sweep run completed: {[(r.name, r.state) for r in scheduled]}")
    assert any(r.state.type.value == "SCHEDULED" for r in scheduled), "the scheduler made no next run"


def test_platform_down_leaves_no_process_behind(live):
    status = json.loads((live["state"] / "platform" / "platform.json").read_text())
    pids = [status["supervisor"]["pid"]] + [s["pid"] for s in status["services"].values() if s["pid"]]
    pids += [d["pid"] for d in status["descendants"]]
    with contextlib.suppress(psutil.Error):
        pids += [p.pid for p in psutil.Process(status["supervisor"]["pid"]).children(recursive=True)]
    down = nerops("platform", "down", env=live["env"], timeout=120)
    assert down.returncode == 0, down.stdout + down.stderr
    assert "none left" in down.stdout
    left = [pid for pid in set(pids) if psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE]
    assert left == [], f"still running: {[(pid, psutil.Process(pid).cmdline()) for pid in left]}"
    assert not (live["state"] / "platform" / "platform.json").exists()
    again = nerops("platform", "status", env=live["env"])
    assert again.returncode != 0 and "not up" in again.stderr
