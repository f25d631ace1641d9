"""Scaling a deployment that takes traffic, in place: more or fewer workers while requests keep coming.

Real processes: an endpoint process and its workers, a traffic generator in threads sending requests
while the control API scales the deployment. Nothing may be answered other than 200 because of a scale;
a scale-up whose new worker cannot start fails with the reason, and the old worker serves on.
"""

from __future__ import annotations

import json
import random
import shutil
import threading
import time
from collections import Counter
from pathlib import Path
from xml.etree import ElementTree

import httpx
import pytest

from nerops.serving.client import EndpointError, LocalEndpoint
from nerops.serving.port import Change
from nerops.settings import Settings
from tests.conftest import approve_synthetic
from tests.cvs import synthetic_cv

SETTINGS = {
    "NEROPS_ENDPOINT_HEALTH_INTERVAL_S": "0.5",
    "NEROPS_ENDPOINT_RESTART_BACKOFF_S": "0.2",
    "NEROPS_ENDPOINT_START_ATTEMPTS": "2",
}
NAME = "scale-ep"
ROLLOUT = Change("rollout-controller", "step 1 of 4: the candidate takes 5 %", "rollout-9c1d")


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, synthetic_data, synthetic_personal):
    """A state folder whose registry holds v1 and v2 (the same model, one byte apart), both at stage=prod."""
    from nerops.data import read_corpus
    from nerops.lifecycle import open_governance

    folder = tmp_path_factory.mktemp("scale-state")
    other = tmp_path_factory.mktemp("models") / "other"
    shutil.copytree(tiny_model, other)
    (other / "model.json").write_text((other / "model.json").read_text() + "\n")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEROPS_STATE_DIR", str(folder))
    for name, value in SETTINGS.items():
        mp.setenv(name, value)
    gov = open_governance(actor="tester@test")
    docs = read_corpus(synthetic_data[1])
    for model in (tiny_model, other):
        approve_synthetic(gov, model, docs, synthetic_personal)
    yield folder
    mp.undo()


@pytest.fixture(scope="module")
def endpoint(state: Path):
    """A holder of the running endpoint (a test restarts it): ``blue`` serves v1 with one worker and all traffic."""
    holder = {"ep": LocalEndpoint.start(Settings(state_dir=state), NAME, export_interval=0.5)}
    client = holder["ep"].client()
    client.create_deployment("blue", "1", instance_count=1)
    client.set_traffic({"blue": 100})
    yield holder
    holder["ep"].stop()


@pytest.fixture(autouse=True)
def _state_env(state: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEROPS_STATE_DIR", str(state))


def _texts(n: int, cvs_per_text: int = 1, seed: int = 5) -> list[str]:
    rng = random.Random(seed)
    cv = lambda: "".join(ElementTree.fromstring(f"<cv>{synthetic_cv(rng)}</cv>").itertext()).strip()  # noqa: E731
    return ["  ".join(cv() for _ in range(cvs_per_text)) for _ in range(n)]


class Traffic:
    """A traffic generator: ``threads`` callers sending live requests back to back until stopped."""

    def __init__(self, ep: LocalEndpoint, texts: list[str], threads: int = 3) -> None:
        self.ep, self.texts = ep, texts
        self.codes: Counter[int] = Counter()
        self.failures = 0  # no answer at all
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._send, args=(i,)) for i in range(threads)]
        self._lock = threading.Lock()

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(120)

    def _send(self, i: int) -> None:
        headers = {"Authorization": f"Bearer {self.ep.key}"}
        with httpx.Client(base_url=self.ep.url, timeout=60) as http:
            n = i
            while not self._stop.is_set():
                try:
                    code = http.post("/score", json={"text": self.texts[n % len(self.texts)]}, headers=headers)
                    code = code.status_code
                except httpx.TransportError:
                    code = None
                with self._lock:
                    if code is None:
                        self.failures += 1
                    else:
                        self.codes[code] += 1
                n += 1

    def sent(self) -> int:
        with self._lock:
            return sum(self.codes.values()) + self.failures


def _until(predicate, timeout: float = 120, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("timed out")


def _gone(pid: int) -> bool:
    try:
        return "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text()  # a zombie has exited
    except FileNotFoundError:
        return True


def _ledger(state: Path, kind: str) -> list[dict]:
    lines = (state / "ledger" / "ledger.jsonl").read_text().splitlines()
    return [entry for entry in map(json.loads, filter(None, lines)) if entry["kind"] == kind]


def test_scale_up_under_load_the_new_worker_serves_once_ready(endpoint: dict, state: Path):
    from nerops.actors import fingerprint

    ep: LocalEndpoint = endpoint["ep"]
    client = ep.client()
    (old,) = client.deployment("blue")["workers"]
    with Traffic(ep, _texts(20)) as traffic:
        _until(lambda: traffic.sent() >= 20)
        started = time.monotonic()
        accepted = client.begin_scale_deployment("blue", 2, change=ROLLOUT)
        assert (accepted["provisioning_state"], accepted["scale"]) == ("Updating", {"from": 1, "to": 2})
        with pytest.raises(EndpointError) as twice:
            client.begin_scale_deployment("blue", 3)
        assert (twice.value.status, twice.value.code) == (409, "operation_in_progress")
        seen = []  # worker 1 as the status showed it while the scale ran

        def done() -> dict | None:
            status = client.deployment("blue")
            seen.extend(w for w in status["workers"] if w["index"] == 1)
            return status if status["provisioning_state"] != "Updating" else None

        status = _until(done)
        took = time.monotonic() - started
        at_success = traffic.sent()
        _until(lambda: traffic.sent() >= at_success + 60)  # a few more requests with two workers
        after = client.deployment("blue")
    assert status["provisioning_state"] == "Succeeded", status
    assert traffic.failures == 0 and dict(traffic.codes) == {200: traffic.sent()}, traffic.codes
    assert seen and seen[0]["joining"] and not seen[0]["ready"], "the new worker was seen starting"
    assert all(w["requests"] == 0 for w in seen if not w["ready"]), "no request before it was ready"
    assert (after["instance_count"], after["ready"], len(after["workers"])) == (2, 2, 2)
    assert after["workers"][0]["pid"] == old["pid"], "the old worker served throughout"
    assert after["workers"][1]["requests"] > 0, "the new worker answers requests"
    assert not any(w["joining"] for w in after["workers"])

    shown = client.endpoint()  # what `nerops endpoint show` prints
    assert shown["deployments"]["blue"]["instance_count"] == 2
    assert (shown["status"]["blue"]["instance_count"], shown["status"]["blue"]["ready"]) == (2, 2)
    (entry,) = _ledger(state, "deployment_scaled")
    assert entry["subject"] == {"model": "resume-ner", "version": "1", "endpoint": NAME, "deployment": "blue"}
    assert (entry["actor"], entry["evidence"]["from"], entry["evidence"]["to"]) == ("rollout-controller", 1, 2)
    assert entry["evidence"]["reason"] == ROLLOUT.reason
    assert entry["evidence"]["correlation_id"] == ROLLOUT.correlation_id
    assert entry["evidence"]["acted_by"]["credential"] == fingerprint(ep.control_key)
    print(f"scale 1 -> 2 took {took:.1f} s under load; {traffic.sent()} requests, all 200")

    ep.stop()  # the saved state says 2: a restart comes back with two workers
    saved = json.loads((state / "endpoints" / NAME / "endpoint.json").read_text())
    assert saved["deployments"]["blue"]["instance_count"] == 2
    endpoint["ep"] = ep = LocalEndpoint.start(Settings(state_dir=state), NAME, export_interval=0.5)
    again = ep.client().deployment("blue")
    assert (again["provisioning_state"], again["instance_count"], again["ready"]) == ("Succeeded", 2, 2)
    assert ep.client().score("Ann Lee  ann@example.com").status_code == 200


def test_scale_down_under_load_loses_no_request(endpoint: dict, state: Path):
    ep: LocalEndpoint = endpoint["ep"]
    client = ep.client()
    before = client.deployment("blue")
    assert (before["instance_count"], before["ready"]) == (2, 2)
    leaving = before["workers"][1]["pid"]
    # four callers on four slots, each request a fraction of a second of prediction: the worker that
    # leaves is answering requests when it is told to go
    with Traffic(ep, _texts(8, cvs_per_text=40, seed=6), threads=4) as traffic:
        _until(lambda: traffic.sent() >= 8)
        status = client.scale_deployment("blue", 1, change=Change("rollout-controller", "promoted: old one down"))
        at_success = traffic.sent()
        _until(lambda: traffic.sent() >= at_success + 8)
    assert traffic.failures == 0 and dict(traffic.codes) == {200: traffic.sent()}, traffic.codes
    assert (status["provisioning_state"], status["instance_count"], status["ready"]) == ("Succeeded", 1, 1)
    assert [w["pid"] for w in status["workers"]] == [before["workers"][0]["pid"]]
    _until(lambda: _gone(leaving))
    assert client.endpoint()["deployments"]["blue"]["instance_count"] == 1
    entry = _ledger(state, "deployment_scaled")[-1]
    assert (entry["evidence"]["from"], entry["evidence"]["to"], entry["actor"]) == (2, 1, "rollout-controller")


def test_a_scale_up_whose_worker_cannot_start_fails_and_the_old_worker_serves_on(endpoint: dict, state: Path):
    ep: LocalEndpoint = endpoint["ep"]
    client = ep.client()
    (old,) = client.deployment("blue")["workers"]
    blocker = state / "endpoints" / NAME / "logs" / "blue-1.log"  # the new worker's log cannot be opened
    blocker.unlink(missing_ok=True)
    blocker.mkdir()
    try:
        with Traffic(ep, _texts(20)) as traffic:
            _until(lambda: traffic.sent() >= 20)
            with pytest.raises(EndpointError) as failed:
                client.scale_deployment("blue", 2, change=ROLLOUT)
            at_failure = traffic.sent()
            _until(lambda: traffic.sent() >= at_failure + 20)
    finally:
        blocker.rmdir()
    assert (failed.value.status, failed.value.code) == (503, "deployment_failed")
    assert "worker 1 failed to start 2 times in a row" in str(failed.value)
    assert "could not be started: [Errno 21] Is a directory" in str(failed.value)
    assert traffic.failures == 0 and dict(traffic.codes) == {200: traffic.sent()}, traffic.codes
    status = client.deployment("blue")
    assert status["provisioning_state"] == "Failed"
    assert (status["error"]["status"], status["error"]["code"]) == (503, "deployment_failed")
    assert (status["instance_count"], status["ready"], [w["pid"] for w in status["workers"]]) == (1, 1, [old["pid"]])
    assert status["down"] is None and client.endpoint()["down"] == {}
    assert client.endpoint()["deployments"]["blue"]["instance_count"] == 1, "the saved state keeps the old count"
    entry = _ledger(state, "deployment_failed")[-1]
    assert entry["evidence"]["scale"] == {"from": 1, "to": 2} and "Is a directory" in entry["evidence"]["error"]
    assert entry["actor"] == "rollout-controller" and entry["evidence"]["reason"] == ROLLOUT.reason
    assert len(_ledger(state, "deployment_scaled")) == 2, "no scale was recorded"

    same = client.scale_deployment("blue", 1)  # as it is: the failed operation is over
    assert (same["provisioning_state"], same["ready"]) == ("Succeeded", 1)


def test_a_deployment_with_traffic_keeps_its_model_and_environment(endpoint: dict):
    ep: LocalEndpoint = endpoint["ep"]
    client = ep.client()
    refused = [
        lambda: client.create_deployment("blue", "2"),  # another model
        lambda: client.create_deployment("blue", "2", instance_count=2),  # another model and a scale
        lambda: client.create_deployment("blue", "1", environment_variables={"NEROPS_X": "1"}),  # another environment
    ]
    for call in refused:
        with pytest.raises(EndpointError) as info:
            call()
        assert (info.value.status, info.value.code) == (409, "has_traffic")
    for count in (0, 17):
        with pytest.raises(EndpointError) as info:
            client.scale_deployment("blue", count)
        assert (info.value.status, info.value.code) == (400, "invalid_change")
        assert "instance_count must be an integer from 1 to 16" in str(info.value)
    stale = {"Authorization": f"Bearer {ep.control_key}", "If-Match": "0" * 16}
    answer = client.http.put("/control/deployments/blue", json={"model": "1", "instance_count": 2}, headers=stale)
    assert (answer.status_code, answer.json()["error"]["code"]) == (412, "precondition_failed")
    with pytest.raises(EndpointError) as missing:
        client.scale_deployment("nosuch", 2)
    assert (missing.value.status, missing.value.code) == (404, "not_found")
    status = client.deployment("blue")
    assert (status["model_version"], status["instance_count"], status["provisioning_state"]) == ("1", 1, "Succeeded")
