"""How the local endpoint fails, exactly (504 / 502 / 503, workers that die with it, starts that fail), and routes.

Real processes: an endpoint process, its worker processes, signals sent to them. Timeouts are
settings, set short here so that each case takes seconds.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from nerops.serving.client import EndpointError, LocalEndpoint
from nerops.settings import Settings
from tests.conftest import approve_synthetic
from tests.cvs import synthetic_cv

FAST = {
    "NEROPS_ENDPOINT_REQUEST_TIMEOUT_S": "30",  # a stopped worker is found by its health checks first
    "NEROPS_ENDPOINT_ACQUIRE_TIMEOUT_S": "0.5",
    "NEROPS_ENDPOINT_HEALTH_INTERVAL_S": "0.2",  # a silent worker is killed after about 6 x 0.2 s
    "NEROPS_ENDPOINT_RESTART_BACKOFF_S": "0.2",
    "NEROPS_ENDPOINT_START_ATTEMPTS": "3",
    "NEROPS_ENDPOINT_MAX_MIRROR_IN_FLIGHT": "1",  # the mirror bound, reached at once
}


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, synthetic_data, synthetic_personal):
    """A state folder whose registry holds v1 at stage=prod."""
    from nerops.data import read_corpus
    from nerops.lifecycle import open_governance

    folder = tmp_path_factory.mktemp("failures-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEROPS_STATE_DIR", str(folder))
    for name, value in FAST.items():
        mp.setenv(name, value)
    gov = open_governance(actor="tester@test")
    approve_synthetic(gov, tiny_model, read_corpus(synthetic_data[1]), synthetic_personal)
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def endpoint(state: Path):
    ep = LocalEndpoint.start(Settings(state_dir=state), "fail-ep", export_interval=0.5)
    client = ep.client()
    client.create_deployment("blue", "1", instance_count=1)
    client.set_traffic({"blue": 100})
    yield ep
    ep.stop()


def _post(
    endpoint: LocalEndpoint, text: str | list[str], deployment: str = "blue", timeout: float = 60
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {endpoint.key}", "azureml-model-deployment": deployment}
    body = {"text": text} if isinstance(text, str) else {"documents": text}
    return httpx.post(f"{endpoint.url}/score", json=body, headers=headers, timeout=timeout)


def _in_background(endpoint: LocalEndpoint, text: str | list[str]) -> tuple[threading.Thread, list[httpx.Response]]:
    answers: list[httpx.Response] = []
    thread = threading.Thread(target=lambda: answers.append(_post(endpoint, text)))
    thread.start()
    return thread, answers


def _worker(endpoint: LocalEndpoint, name: str = "blue") -> dict:
    return endpoint.client().deployment(name)["workers"][0]


def _wait_replaced(endpoint: LocalEndpoint, pid: int, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker = _worker(endpoint)
        if worker["ready"] and worker["pid"] != pid:
            assert _post(endpoint, "Ann Lee ann@example.com").status_code == 200
            return worker
        time.sleep(0.2)
    raise AssertionError("the worker was not replaced")


def _long_batch() -> list[str]:
    """Five documents of 250 CVs each, within the body limit: seconds of prediction."""
    import random
    from xml.etree import ElementTree

    rng = random.Random(9)
    cvs = ["".join(ElementTree.fromstring(f"<cv>{synthetic_cv(rng)}</cv>").itertext()) for _ in range(250)]
    return ["  ".join(cvs)] * 5


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie has exited; only its parent's bookkeeping is left


def test_failure_answers_by_what_happened_to_the_worker():
    from nerops.serving.pool import DeploymentPool, PoolSettings, Slot, Worker

    pool = DeploymentPool("blue", "1", Path("."), 1, Path("."), settings=PoolSettings(request_timeout_s=7))
    worker = Worker(0, Path("w.sock"), generation=3)
    timed_out = pool.failure(Slot(worker, 3), httpx.ReadTimeout("slow"))
    assert timed_out == (504, "deployment_timeout", "deployment 'blue' did not answer within 7 s")
    assert pool.failure(Slot(worker, 3), httpx.RemoteProtocolError("gone"))[0] == 502
    worker.hung_generation = 3  # the supervisor killed this generation for failed health checks
    assert pool.failure(Slot(worker, 3), httpx.RemoteProtocolError("gone"))[:2] == (504, "deployment_timeout")
    assert pool.failure(Slot(worker, 4), httpx.ReadError("gone"))[0] == 502


def test_a_worker_that_refuses_the_connection_is_passed_over(tmp_path: Path):
    """Refused at connect, the request never reached the worker: the next free one answers, else 503."""
    import asyncio
    import socket

    from nerops.serving.pool import DeploymentPool, PoolSettings, Slot, Unanswered, Worker

    refusing = tmp_path / "dying.sock"
    bound = socket.socket(socket.AF_UNIX)
    bound.bind(str(refusing))  # bound, never listening: connect() is refused, as for a dying worker
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    asked: list[str] = []

    def answering(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        return httpx.Response(200, json={"documents": []})

    async def scenario(with_answering: bool) -> httpx.Response:
        pool = DeploymentPool("blue", "1", tmp_path, 2, tmp_path, settings=PoolSettings(acquire_timeout_s=0.3))
        pool._slots = asyncio.Queue()
        dying = Worker(0, refusing, process=sleeper, ready=True, generation=1)
        dying.client = httpx.AsyncClient(transport=httpx.AsyncHTTPTransport(uds=str(refusing)))
        pool.workers = [dying]
        pool._slots.put_nowait(Slot(dying, 1))  # first in the queue: tried first
        if with_answering:
            live = Worker(1, tmp_path / "live.sock", process=sleeper, ready=True, generation=1)
            live.client = httpx.AsyncClient(transport=httpx.MockTransport(answering))
            pool.workers.append(live)
            pool._slots.put_nowait(Slot(live, 1))
        try:
            return await pool.dispatch(b'{"text": "Ann"}', "application/json")
        finally:
            assert [w.in_flight for w in pool.workers] == [0] * len(pool.workers), "every slot given back"

    try:
        assert asyncio.run(scenario(with_answering=True)).status_code == 200
        assert asked == ["/score"]
        with pytest.raises(Unanswered) as none:
            asyncio.run(scenario(with_answering=False))
        assert (none.value.status, none.value.code) == (503, "no_live_worker")
        assert "within 0.3 s" in none.value.message
    finally:
        sleeper.kill()
        sleeper.wait()
        bound.close()


def test_a_request_on_a_worker_that_stops_answering_gets_504(endpoint: LocalEndpoint):
    victim = _worker(endpoint)
    os.kill(victim["pid"], signal.SIGSTOP)
    try:
        thread, answers = _in_background(endpoint, "Ann Lee ann@example.com")
        thread.join(60)
    finally:
        with contextlib.suppress(ProcessLookupError):  # the supervisor has killed it by now
            os.kill(victim["pid"], signal.SIGCONT)
    try:
        assert answers[0].status_code == 504
        assert answers[0].json()["error"]["code"] == "deployment_timeout"
    finally:  # the next test needs a live worker whatever this one found
        _wait_replaced(endpoint, victim["pid"])


def test_a_request_on_a_worker_that_exits_gets_502(endpoint: LocalEndpoint):
    victim = _worker(endpoint)
    thread, answers = _in_background(endpoint, _long_batch())  # seconds of prediction
    time.sleep(1.0)
    os.kill(victim["pid"], signal.SIGKILL)
    thread.join(60)
    try:
        assert answers[0].status_code == 502
        assert answers[0].json()["error"]["code"] == "deployment_unavailable"
    finally:
        _wait_replaced(endpoint, victim["pid"])


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        assert time.monotonic() < deadline, f"process {pid} outlived SIGKILL by {timeout} s"
        time.sleep(0.005)


def test_a_request_that_finds_no_live_worker_gets_503(endpoint: LocalEndpoint):
    victim = _worker(endpoint)
    os.kill(victim["pid"], signal.SIGKILL)
    _wait_gone(victim["pid"])  # a kill is delivered when the victim next runs: on a busy machine, later
    try:
        answer = _post(endpoint, "Ann Lee ann@example.com")  # the replacement takes longer than the 0.5 s wait
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "no_live_worker"
        assert "no live worker" in answer.json()["error"]["message"]
    finally:
        _wait_replaced(endpoint, victim["pid"])


def test_health_is_answered_while_a_long_prediction_runs(endpoint: LocalEndpoint):
    before = _worker(endpoint)
    started = time.monotonic()
    answer = _post(endpoint, _long_batch())
    took = time.monotonic() - started
    assert answer.status_code == 200
    assert took > 1.5, "the prediction outlasted three failed health checks (3 x (interval + timeout))"
    after = _worker(endpoint)
    assert (after["pid"], after["restarts"]) == (before["pid"], before["restarts"]), "no restart for a busy worker"


def test_a_worker_that_cannot_start_is_retried_then_down_and_can_be_redeployed(endpoint: LocalEndpoint, state: Path):
    client = endpoint.client()
    broken = {"NEROPS_MAX_BODY_BYTES": "lots"}
    with pytest.raises(EndpointError) as failed:
        client.create_deployment("bad", "1", environment_variables=broken)
    assert (failed.value.status, failed.value.code) == (503, "deployment_failed")
    message = str(failed.value)
    assert "failed to start 3 times in a row" in message
    assert "NEROPS_MAX_BODY_BYTES must be a whole number of bytes, not 'lots'" in message
    assert "bad" in client.endpoint()["down"]
    answer = _post(endpoint, "Ann Lee", deployment="bad")
    assert (answer.status_code, answer.json()["error"]["code"]) == (503, "deployment_down")
    leftovers = [p for p in Path("/proc").glob("[0-9]*") if _cmdline_has(p, "bad-0.sock") and not _gone(int(p.name))]
    assert not leftovers, "a failed start leaves no worker behind"

    created = client.create_deployment("bad", "1")  # the same name, without the broken setting
    assert created["ready"] == 1
    assert _post(endpoint, "Ann Lee ann@example.com", deployment="bad").status_code == 200
    assert "bad" not in client.endpoint()["down"]

    with pytest.raises(EndpointError):
        client.create_deployment("worse", "1", environment_variables=broken)
    assert client.delete_deployment("worse") == {"deleted": "worse"}
    assert "worse" not in client.endpoint()["down"]
    kinds = [entry["kind"] for entry in _ledger(state)]
    assert kinds.count("deployment_failed") == 2


def _cmdline_has(proc: Path, needle: str) -> bool:
    try:
        return needle in (proc / "cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return False


def _ledger(state: Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (state / "ledger" / "ledger.jsonl").read_text().splitlines() if line]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"model": "1", "instance_count": "two"}, "instance_count must be an integer from 1 to 16"),
        ({"model": "1", "instance_count": 0}, "instance_count must be an integer from 1 to 16"),
        ({"model": "1", "instance_count": 99}, "instance_count must be an integer from 1 to 16"),
        ({"model": "1", "environment_variables": {"NEROPS_MODEL_DIR": "/x"}}, "is not a usable name"),
        ({"model": "1", "environment_variables": {"OK": 3}}, "needs a string value"),
        ({"model": "1", "replicas": 2}, "unknown fields ['replicas']"),
    ],
)
def test_bad_deployment_requests_are_4xx(endpoint: LocalEndpoint, body: dict, fragment: str):
    client = endpoint.client()
    with pytest.raises(EndpointError) as failed:
        client._control("PUT", "deployments/other", body)
    assert failed.value.status == 400 and fragment in str(failed.value)


def test_a_second_process_cannot_serve_the_same_endpoint(endpoint: LocalEndpoint, state: Path):
    second = subprocess.run(
        [sys.executable, "-m", "nerops.serving.endpoint", "--name", "fail-ep", "--port", "1"],
        env={**os.environ, "NEROPS_STATE_DIR": str(state)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode != 0
    assert f"endpoint 'fail-ep' is already served by process {endpoint.process.pid}" in second.stderr


def test_kill_9_of_the_endpoint_leaves_no_worker(state: Path):
    ep = LocalEndpoint.start(Settings(state_dir=state), "doomed-ep", export_interval=0.5)
    try:
        ep.client().create_deployment("blue", "1", instance_count=2)
        pids = [w["pid"] for w in ep.client().deployment("blue")["workers"]]
        os.kill(pids[1], signal.SIGSTOP)  # a stopped worker cannot read its pipe: the kernel's signal ends it
        os.kill(ep.process.pid, signal.SIGKILL)
        ep.process.wait(10)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(_gone(pid) for pid in pids):
            time.sleep(0.1)
        assert all(_gone(pid) for pid in pids), "every worker died with the endpoint"
    finally:
        ep.stop()


def test_routing_keys_stay_on_the_canary_as_it_grows_and_go_back_on_rollback(endpoint: LocalEndpoint):
    client = endpoint.client()
    client.create_deployment("canary", "1")
    keys = [f"cv-{i}" for i in range(150)]

    def answered_by_canary() -> set[str]:
        on = set()
        with httpx.Client(base_url=endpoint.url, timeout=60) as http:
            for key in keys:
                headers = {"Authorization": f"Bearer {endpoint.key}", "x-nerops-routing-key": key}
                response = http.post("/score", json={"text": "Ann Lee  Analyst"}, headers=headers)
                assert response.status_code == 200
                if response.headers["azureml-model-deployment"] == "canary":
                    on.add(key)
        return on

    try:
        seen = []
        for weight in (5, 25, 50):
            client.set_traffic({"blue": 100 - weight, "canary": weight})
            seen.append(answered_by_canary())
        assert seen[0] <= seen[1] <= seen[2] and seen[0] and len(seen[2]) < len(keys)
        client.set_traffic({"blue": 100, "canary": 0})
        assert answered_by_canary() == set(), "after a rollback every key is back on the stable deployment"
    finally:
        client.set_traffic({"blue": 100})
        client.delete_deployment("canary")


CONTROL_ROUTES = [
    ("GET", "endpoint", None),
    ("PUT", "endpoint", {"traffic": {"blue": 100}}),
    ("GET", "deployments", None),
    ("GET", "deployments/blue", None),
    ("PUT", "deployments/other", {"model": "1"}),
    ("DELETE", "deployments/blue", None),
]


@pytest.mark.parametrize(("method", "path", "body"), CONTROL_ROUTES)
def test_a_scoring_key_gets_403_on_every_control_route(endpoint: LocalEndpoint, method: str, path: str, body):
    url = f"{endpoint.url}/control/{path}"
    scoring = httpx.request(method, url, json=body, headers={"Authorization": f"Bearer {endpoint.key}"})
    assert (scoring.status_code, scoring.json()["error"]["code"]) == (403, "forbidden")
    nobody = httpx.request(method, url, json=body)
    assert nobody.status_code == 401
    if method == "GET":
        control = httpx.get(url, headers={"Authorization": f"Bearer {endpoint.control_key}"})
        assert control.status_code == 200


def test_a_change_records_who_why_which_rollout_and_the_credential_fingerprint(endpoint: LocalEndpoint, state: Path):
    from nerops.actors import fingerprint
    from nerops.serving.port import Change

    client = endpoint.client()
    view = client.read()
    change = Change("rollout-controller", "step 2 of 4: healthy", "rollout-7f3a")
    client.set_traffic({"blue": 100}, {}, if_match=view.etag, change=change)  # the same split: nothing to record
    client.create_deployment("audited", "1", change=change)
    try:
        entry = _ledger(state)[-1]
        assert entry["kind"] == "deployment_created" and entry["actor"] == "rollout-controller"
        assert entry["evidence"]["reason"] == "step 2 of 4: healthy"
        assert entry["evidence"]["correlation_id"] == "rollout-7f3a"
        assert entry["evidence"]["acted_by"]["credential"] == fingerprint(endpoint.control_key)
        text = (state / "ledger" / "ledger.jsonl").read_text()
        assert endpoint.control_key not in text and endpoint.key not in text
    finally:
        client.delete_deployment("audited", change=change)


def test_two_writers_with_the_same_etag_the_second_gets_412(endpoint: LocalEndpoint):
    client = endpoint.client()
    client.create_deployment("second", "1")
    try:
        view = client.read()
        client.set_traffic({"blue": 90, "second": 10}, {}, if_match=view.etag)
        with pytest.raises(EndpointError) as late:
            client.set_traffic({"blue": 50, "second": 50}, {}, if_match=view.etag)
        assert late.value.status == 412 and late.value.code == "precondition_failed"
        assert client.read().state["traffic"] == {"blue": 90, "second": 10}, "the first write stands"
    finally:
        client.set_traffic({"blue": 100}, {})
        client.delete_deployment("second")


def test_a_control_body_over_the_limit_is_413(endpoint: LocalEndpoint):
    headers = {"Authorization": f"Bearer {endpoint.control_key}", "content-type": "application/json"}
    body = b'{"traffic": {"blue": 100}, "pad": "' + b"x" * (65 * 1024) + b'"}'
    answer = httpx.put(f"{endpoint.url}/control/endpoint", content=body, headers=headers)
    assert (answer.status_code, answer.json()["error"]["code"]) == (413, "payload_too_large")


def test_both_control_credentials_work_while_rotating(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEROPS_CONTROL_KEY", "new-control-credential-0123456789")
    monkeypatch.setenv("NEROPS_CONTROL_KEY_PREVIOUS", "old-control-credential-0123456789")
    ep = LocalEndpoint.start(Settings(state_dir=state), "rotating-ep", export_interval=0.5)
    try:
        for key, status in (
            ("new-control-credential-0123456789", 200),
            ("old-control-credential-0123456789", 200),
            ("older-control-credential-012345678", 401),
        ):
            answer = httpx.get(f"{ep.url}/control/endpoint", headers={"Authorization": f"Bearer {key}"})
            assert answer.status_code == status, key
        assert ep.client().read().etag
    finally:
        ep.stop()


def test_a_traffic_change_during_a_deployment_start_does_not_wait_for_it(endpoint: LocalEndpoint, state: Path):
    client = endpoint.client()
    started = client.begin_create_deployment("starting", "1", instance_count=2)
    assert started["provisioning_state"] == "Creating"
    with pytest.raises(EndpointError) as twice:
        client.begin_create_deployment("starting", "1")
    assert (twice.value.status, twice.value.code) == (409, "operation_in_progress")
    view = client.read()
    done = client.set_traffic({"blue": 100}, {}, if_match=view.etag)  # the endpoint answers while workers start
    assert done["traffic"] == {"blue": 100}
    assert client.deployment("starting")["provisioning_state"] == "Creating", "the change did not wait"
    status = client.wait_deployment("starting", deadline_s=120)
    assert status["provisioning_state"] == "Succeeded" and status["ready"] == 2
    assert "starting" in client.read().state["deployments"]
    client.delete_deployment("starting")


def test_an_endpoint_with_telemetry_off_serves_and_records_nothing(state: Path, monkeypatch: pytest.MonkeyPatch):
    """The 'off' arm of the monitoring-cost benchmark: the same endpoint, no telemetry written."""
    import sqlite3

    def rows(endpoint: str) -> int:
        store = state / "telemetry" / "telemetry.db"
        if not store.exists():
            return 0
        with contextlib.closing(sqlite3.connect(store)) as db:
            tables = ("system_points", "model_points", "watermarks")
            return sum(
                db.execute(f"SELECT COUNT(*) FROM {t} WHERE endpoint = ?", (endpoint,)).fetchone()[0] for t in tables
            )

    for enabled, name in (("false", "quiet-ep"), ("true", "loud-ep")):
        monkeypatch.setenv("NEROPS_TELEMETRY_ENABLED", enabled)
        ep = LocalEndpoint.start(Settings(state_dir=state), name, export_interval=0.2)
        try:
            ep.client().create_deployment("blue", "1")
            ep.client().set_traffic({"blue": 100})
            assert all(_post_to(ep, "Ann Lee ann@example.com").status_code == 200 for _ in range(5))
            time.sleep(1.0)  # five export intervals
        finally:
            ep.stop()
    assert rows("quiet-ep") == 0, "nothing was written for the endpoint with telemetry off"
    assert rows("loud-ep") > 0, "the same steps with telemetry on write points"


def _post_to(ep: LocalEndpoint, text: str) -> httpx.Response:
    return httpx.post(f"{ep.url}/score", json={"text": text}, headers={"Authorization": f"Bearer {ep.key}"})


def test_every_answer_carries_its_own_request_id(endpoint: LocalEndpoint):
    answers = [
        _post(endpoint, "Ann Lee ann@example.com"),  # 200
        httpx.post(f"{endpoint.url}/score", json={"text": "x"}),  # 401
        httpx.get(f"{endpoint.url}/nowhere"),  # 404
        httpx.get(f"{endpoint.url}/control/endpoint", headers={"Authorization": f"Bearer {endpoint.key}"}),  # 403
        httpx.get(f"{endpoint.url}/health"),  # 200
    ]
    assert [a.status_code for a in answers] == [200, 401, 404, 403, 200]
    ids = [a.headers["x-request-id"] for a in answers]
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids) and len(set(ids)) == len(ids)


def test_mirror_copies_beyond_the_bound_are_dropped_and_counted(endpoint: LocalEndpoint, state: Path):
    from concurrent.futures import ThreadPoolExecutor

    from nerops.telemetry.store import TelemetryStore

    client = endpoint.client()
    client.create_deployment("shadow", "1")
    since = time.time() - 1
    try:
        client.set_traffic({"blue": 100}, {"shadow": 50})
        with ThreadPoolExecutor(8) as callers:  # eight at once; one copy may be in flight
            codes = list(callers.map(lambda _: _post_to(endpoint, "Ann Lee ann@example.com").status_code, range(48)))
        assert set(codes) == {200}, "live answers never wait for copies"
        time.sleep(2.0)  # the copies end; a few export intervals
    finally:
        client.set_traffic({"blue": 100}, {})
        client.delete_deployment("shadow")
    store = TelemetryStore(state / "telemetry" / "telemetry.db")
    try:
        until = time.time() + 60
        dropped = store.aggregate(
            "system", "mirror_dropped_count", since, until, deployment="shadow", traffic=["mirror"]
        )
        copies = store.aggregate("system", "request_count", since, until, deployment="shadow", traffic=["mirror"])
    finally:
        store.close()
    assert dropped.sum > 0, "copies beyond the bound are dropped and counted"
    assert copies.sum > 0, "copies within the bound are served"
