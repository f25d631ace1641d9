"""The GitHub webhook receiver (nerops.triggers.receiver): every answer, the store, the log, a real server.

Most tests drive the ASGI app with Starlette's TestClient and a recording poster (no event may be posted);
the retrain tests post to the session's real Prefect server (``prefect_harness``) and read the event back.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from nerops.errors import ConfigurationError
from nerops.serving.client import free_port
from nerops.settings import Settings
from nerops.triggers.deliveries import DeliveryLog, DeliveryStore
from nerops.triggers.github import EVENT_NAME, event_id, sign
from nerops.triggers.receiver import PrefectEvents, create_app, webhook
from tests.test_github_decision import MODEL_FILE, commit, push

SECRET = "current-secret-for-tests-0123456789"
PREVIOUS = "previous-secret-for-tests-9876543210"
LIMIT = 4096


class Recorder:
    """A poster that accepts every event and keeps it: the tests that must post nothing check it is empty."""

    def __init__(self) -> None:
        self.posted: list[dict] = []

    async def post(self, events: list[dict]) -> None:
        self.posted.extend(events)


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch) -> None:
    """The secret and a tiny body limit, from the environment as in production."""
    monkeypatch.setenv("NEROPS_GITHUB_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("NEROPS_WEBHOOK_MAX_BODY_BYTES", str(LIMIT))
    monkeypatch.delenv("NEROPS_GITHUB_WEBHOOK_SECRET_PREVIOUS", raising=False)


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
def client(env, recorder):
    with TestClient(create_app(Settings(), poster=recorder)) as test_client:
        yield test_client


def encode(payload: dict) -> bytes:
    return json.dumps(payload, indent=1).encode()  # not compact: the signature is over these exact bytes


def headers(body: bytes, *, event: str | None = "push", delivery: str | None = None, secret: str | None = SECRET):
    out = {"content-type": "application/json", "x-github-delivery": delivery or str(uuid.uuid4())}
    if event is not None:
        out["x-github-event"] = event
    if secret is not None:
        out["x-hub-signature-256"] = sign(secret, body)
    return out


def deliver(client: TestClient, payload: dict | bytes, **options) -> httpx.Response:
    body = payload if isinstance(payload, bytes) else encode(payload)
    extra = options.pop("extra", {})
    return client.post("/github", content=body, headers={**headers(body, **options), **extra})


def consumed(state: Path) -> int:
    store = DeliveryStore(state / "webhook" / "deliveries.db", 86400.0)
    try:
        return store.count()
    finally:
        store.close()


def training_push() -> dict:
    return push(commit([MODEL_FILE, "README.md"]))


def ping() -> dict:
    return {"zen": "Anything added dilutes everything else.", "hook_id": 7, "hook": {"type": "Repository"}}


# ---- refusals: exact status, verdict and code; nothing consumed, nothing posted


def assert_refused(response: httpx.Response, status: int, code: str, recorder: Recorder, state: Path) -> dict:
    answer = response.json()
    assert (response.status_code, answer["verdict"], answer["code"]) == (status, "refused", code), answer
    assert answer["reason"]
    assert recorder.posted == []
    assert consumed(state) == 0
    return answer


def test_a_wrong_signature_is_403(client, recorder, _isolated_state):
    response = deliver(client, training_push(), secret="not-the-secret")
    assert_refused(response, 403, "bad_signature", recorder, _isolated_state)


def test_a_missing_signature_is_401(client, recorder, _isolated_state):
    response = deliver(client, training_push(), secret=None)
    assert (
        "give the webhook a secret"
        in assert_refused(response, 401, "missing_signature", recorder, _isolated_state)["reason"]
    )


@pytest.mark.parametrize(
    "signature",
    ["sha256=abc", "sha1=" + "a" * 40, "sha256=" + "z" * 64, "0" * 64, "sha256=" + "a" * 65],
    ids=["short", "sha1", "not-hex", "no-prefix", "too-long"],
)
def test_a_malformed_signature_is_400(client, recorder, _isolated_state, signature):
    response = deliver(client, training_push(), extra={"x-hub-signature-256": signature})
    assert_refused(response, 400, "malformed_signature", recorder, _isolated_state)


def test_a_signature_over_other_bytes_is_wrong(client, recorder, _isolated_state):
    body = encode(training_push())
    response = client.post("/github", content=body + b"\n", headers=headers(body))  # signed without the newline
    assert_refused(response, 403, "bad_signature", recorder, _isolated_state)


def test_malformed_json_is_400(client, recorder, _isolated_state):
    assert_refused(deliver(client, b'{"ref": '), 400, "malformed_json", recorder, _isolated_state)
    assert_refused(deliver(client, b"[1, 2]"), 400, "malformed_json", recorder, _isolated_state)
    assert_refused(deliver(client, b"\xff\xfe"), 400, "malformed_json", recorder, _isolated_state)


def test_a_declared_oversized_body_is_413_before_reading(client, recorder, _isolated_state):
    body = b'{"pad": "' + b"x" * LIMIT + b'"}'
    response = deliver(client, body)
    assert (
        "the limit is 4096" in assert_refused(response, 413, "payload_too_large", recorder, _isolated_state)["reason"]
    )


def test_a_chunked_oversized_body_is_413(client, recorder, _isolated_state):
    body = b'{"pad": "' + b"x" * LIMIT + b'"}'

    def chunks():
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    response = client.post("/github", content=chunks(), headers=headers(body))
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    assert_refused(response, 413, "payload_too_large", recorder, _isolated_state)


def test_reading_a_chunked_body_stops_once_it_passes_the_limit(env, recorder, _isolated_state):
    """At the ASGI level: a long body is read only up to the limit, then 413."""
    app = create_app(Settings(), poster=recorder)
    received = 0
    sent: list[dict] = []

    async def receive():  # 100 chunks of 500 bytes: far more than the limit, bounded if the limit failed
        nonlocal received
        received += 1
        await asyncio.sleep(0)
        return {"type": "http.request", "body": b"x" * 500, "more_body": received < 100}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/github",
        "raw_path": b"/github",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8470),
    }
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert sent[0]["status"] == 413
    assert received == LIMIT // 500 + 1  # 9 chunks: 4500 bytes > 4096, and not one more
    app.state.receiver.store.close()


def test_an_unknown_event_is_400(client, recorder, _isolated_state):
    answer = assert_refused(
        deliver(client, {"action": "opened"}, event="issues"), 400, "unsupported_event", recorder, _isolated_state
    )
    assert "'issues' is not handled: only push, ping" in answer["reason"]
    answer = assert_refused(deliver(client, ping(), event=None), 400, "unsupported_event", recorder, _isolated_state)
    assert "no X-GitHub-Event header" in answer["reason"]


def test_a_delivery_id_is_required(client, recorder, _isolated_state):
    body = encode(ping())
    for bad in ({}, {"x-github-delivery": ""}, {"x-github-delivery": "../../etc"}):
        sent = {k: v for k, v in headers(body, event="ping").items() if k != "x-github-delivery"} | bad
        response = client.post("/github", content=body, headers=sent)
        assert_refused(response, 400, "missing_delivery", recorder, _isolated_state)


def test_a_form_encoded_delivery_is_415(client, recorder, _isolated_state):
    response = deliver(client, ping(), event="ping", extra={"content-type": "application/x-www-form-urlencoded"})
    assert_refused(response, 415, "unsupported_content_type", recorder, _isolated_state)


def test_other_routes_and_methods(client):
    assert client.get("/github").status_code == 405
    assert client.get("/health").json() == {"status": "ok", "store": True}
    assert client.post("/control/x").json()["code"] == "not_found"


# ---- answers that consume the delivery without an event


def test_a_push_touching_no_training_path_is_ignored(client, recorder, _isolated_state):
    response = deliver(client, push(commit(["README.md", "docs/guide.md"])))
    answer = response.json()
    assert (response.status_code, answer["verdict"]) == (200, "ignored")
    assert answer["reason"] == "none of 2 changed file(s) match the training paths"
    assert recorder.posted == [] and consumed(_isolated_state) == 1


def test_a_push_to_another_branch_is_ignored(client, recorder, _isolated_state):
    response = deliver(client, push(commit([MODEL_FILE]), ref="refs/heads/experiment"))
    answer = response.json()
    assert (response.status_code, answer["verdict"]) == (200, "ignored")
    assert answer["reason"] == "not a push to the watched branch refs/heads/main"
    assert recorder.posted == [] and consumed(_isolated_state) == 1


def test_ping_is_a_pong(client, recorder, _isolated_state):
    delivery = str(uuid.uuid4())
    response = deliver(client, ping(), event="ping", delivery=delivery)
    assert (response.status_code, response.json()) == (
        200,
        {
            "verdict": "pong",
            "delivery": delivery,
            "reason": "ping: the hook reaches the receiver",
            "zen": "Anything added dilutes everything else.",
            "hook_id": 7,
        },
    )
    assert recorder.posted == [] and consumed(_isolated_state) == 1


# ---- duplicates


def test_a_replayed_delivery_is_a_duplicate(client, recorder, _isolated_state):
    delivery = str(uuid.uuid4())
    first = deliver(client, training_push(), delivery=delivery)
    assert (first.status_code, first.json()["verdict"]) == (202, "retrain") and len(recorder.posted) == 1
    again = deliver(client, training_push(), delivery=delivery)  # same id (GitHub's redelivery), another body
    assert (again.status_code, again.json()["verdict"]) == (200, "duplicate")
    assert "was already handled (verdict retrain)" in again.json()["reason"]
    assert len(recorder.posted) == 1 and consumed(_isolated_state) == 1


def test_the_same_body_under_a_new_id_is_a_duplicate(client, recorder, _isolated_state):
    body = encode(training_push())
    first_id = str(uuid.uuid4())
    assert client.post("/github", content=body, headers=headers(body, delivery=first_id)).status_code == 202
    replay = client.post("/github", content=body, headers=headers(body))  # a captured body, a fresh id
    assert (replay.status_code, replay.json()["verdict"]) == (200, "duplicate")
    assert f"the same body came as delivery {first_id}" in replay.json()["reason"]
    assert len(recorder.posted) == 1 and consumed(_isolated_state) == 1


def test_an_ignored_delivery_replayed_is_a_duplicate_too(client, recorder, _isolated_state):
    body = encode(ping())
    assert client.post("/github", content=body, headers=headers(body, event="ping")).json()["verdict"] == "pong"
    again = client.post("/github", content=body, headers=headers(body, event="ping"))
    assert (again.status_code, again.json()["verdict"]) == (200, "duplicate")


def test_the_store_survives_a_restart(env, recorder, _isolated_state):
    body, delivery = encode(training_push()), str(uuid.uuid4())
    with TestClient(create_app(Settings(), poster=recorder)) as first:
        assert first.post("/github", content=body, headers=headers(body, delivery=delivery)).status_code == 202
    with TestClient(create_app(Settings(), poster=recorder)) as second:  # a new process, the same state folder
        again = second.post("/github", content=body, headers=headers(body, delivery=delivery))
        replay = second.post("/github", content=body, headers=headers(body))
    assert [again.json()["verdict"], replay.json()["verdict"]] == ["duplicate", "duplicate"]
    assert len(recorder.posted) == 1
    assert (_isolated_state / "webhook" / "deliveries.db").is_file()


def test_a_copy_arriving_while_the_first_is_posted_is_409(env, _isolated_state):
    class Slow:
        def __init__(self) -> None:
            self.started, self.release, self.posted = asyncio.Event(), asyncio.Event(), []

        async def post(self, events):
            self.started.set()
            await self.release.wait()
            self.posted.extend(events)

    slow = Slow()
    app = create_app(Settings(), poster=slow)
    body = encode(training_push())
    sent = headers(body)

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as http:
            first = asyncio.create_task(http.post("/github", content=body, headers=sent))
            await asyncio.wait_for(slow.started.wait(), 10)
            second = await http.post("/github", content=body, headers=sent)
            slow.release.set()
            return await first, second

    first, second = asyncio.run(run())
    assert (first.status_code, second.status_code, second.json()["code"]) == (202, 409, "in_progress")
    assert len(slow.posted) == 1
    app.state.receiver.store.close()


# ---- secrets, start-up, rate limit


def test_the_previous_secret_is_accepted_during_a_rotation(env, monkeypatch, recorder, _isolated_state):
    monkeypatch.setenv("NEROPS_GITHUB_WEBHOOK_SECRET_PREVIOUS", PREVIOUS)
    with TestClient(create_app(Settings(), poster=recorder)) as rotating:
        old = deliver(rotating, ping(), event="ping", secret=PREVIOUS)
        new = deliver(rotating, training_push(), secret=SECRET)
        other = deliver(rotating, ping(), event="ping", secret="a-third-secret")
    assert [old.status_code, new.status_code, other.status_code] == [200, 202, 403]
    monkeypatch.delenv("NEROPS_GITHUB_WEBHOOK_SECRET_PREVIOUS")
    with TestClient(create_app(Settings(), poster=recorder)) as rotated:  # rotation over: the old one is refused
        assert deliver(rotated, ping(), event="ping", secret=PREVIOUS).status_code == 403


def test_start_up_without_a_secret_fails(monkeypatch):
    monkeypatch.delenv("NEROPS_GITHUB_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("NEROPS_GITHUB_WEBHOOK_SECRET_PREVIOUS", PREVIOUS)  # a previous one alone is not enough
    with pytest.raises(ConfigurationError, match="NEROPS_GITHUB_WEBHOOK_SECRET"):
        create_app(Settings())
    result = CliRunner().invoke(webhook, ["serve", "--port", str(free_port())])
    assert result.exit_code == 1
    assert "no webhook secret: set NEROPS_GITHUB_WEBHOOK_SECRET" in result.output
    module = subprocess.run(
        [sys.executable, "-m", "nerops.triggers.receiver"],
        env={**os.environ, "NEROPS_GITHUB_WEBHOOK_SECRET": ""},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert module.returncode != 0 and "no webhook secret" in module.stderr


def test_start_up_without_a_prefect_server_fails(env, monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = CliRunner().invoke(webhook, ["serve", "--port", str(free_port())])
    assert result.exit_code == 1 and "no Prefect server: set PREFECT_API_URL" in result.output


def test_the_rate_limit_answers_429_with_retry_after(env, monkeypatch, recorder):
    monkeypatch.setenv("NEROPS_WEBHOOK_BURST", "2")
    monkeypatch.setenv("NEROPS_WEBHOOK_RATE_PER_S", "0.5")
    now = [1000.0]
    with TestClient(create_app(Settings(), poster=recorder, clock=lambda: now[0])) as limited:
        assert [deliver(limited, ping(), event="ping").status_code for _ in range(2)] == [200, 200]
        refused = deliver(limited, ping(), event="ping")
        unsigned = deliver(limited, ping(), event="ping", secret=None)  # before the signature: counted too
        now[0] += 2.0  # one token back
        after = deliver(limited, ping(), event="ping")
    assert (refused.status_code, refused.json()["verdict"], refused.json()["code"]) == (429, "refused", "rate_limited")
    assert refused.headers["retry-after"] == "2"
    assert unsigned.status_code == 429
    assert after.status_code == 200


# ---- the deliveries log


def test_the_deliveries_log_has_one_line_per_delivery_and_no_payload_text(client, _isolated_state):
    deliver(client, training_push())
    deliver(client, push(commit(["README.md"])))
    deliver(client, ping(), event="ping", secret="wrong")
    deliver(client, {"action": "opened"}, event="issues")
    lines = [json.loads(line) for line in (_isolated_state / "webhook" / "deliveries.log").read_text().splitlines()]
    assert [(entry["verdict"], entry["status"]) for entry in lines] == [
        ("retrain", 202),
        ("ignored", 200),
        ("refused", 403),
        ("refused", 400),
    ]
    assert {"time", "delivery", "event", "verdict", "status", "code", "reason"} <= set(lines[0])
    assert (lines[0]["changed"], lines[0]["matched"], lines[0]["files_complete"]) == (2, 1, True)
    assert lines[2]["delivery"] is None and lines[3]["event"] == "issues"
    text = (_isolated_state / "webhook" / "deliveries.log").read_text()
    for payload_text in ("config.py", "README", "Alice", "example.com", "Anything added"):
        assert payload_text not in text


def test_the_deliveries_log_rotates_within_its_bound(tmp_path):
    log = DeliveryLog(tmp_path / "deliveries.log", max_bytes=1024, backups=2)
    for i in range(200):
        log.write(delivery=f"d-{i}", event="push", verdict="ignored", status=200, code=None, reason="none of 1")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["deliveries.log", "deliveries.log.1", "deliveries.log.2"]
    assert all((tmp_path / name).stat().st_size <= 1024 for name in files)
    assert json.loads((tmp_path / "deliveries.log").read_text().splitlines()[-1])["delivery"] == "d-199"


def test_the_store_forgets_deliveries_older_than_the_window(tmp_path):
    now = [1_000_000.0]
    store = DeliveryStore(tmp_path / "deliveries.db", max_age_s=100.0, clock=lambda: now[0])
    store.consume("old", "a" * 64, "push", "ignored")
    now[0] += 50
    store.consume("recent", "b" * 64, "push", "retrain")
    assert store.seen("old", "z" * 64).by == "delivery"
    assert store.seen("another", "b" * 64).delivery == "recent"
    now[0] += 60  # "old" is 110 s old: past the window
    assert store.seen("old", "a" * 64) is None
    assert store.prune() == 1 and store.count() == 1
    store.close()
    reopened = DeliveryStore(tmp_path / "deliveries.db", max_age_s=100.0, clock=lambda: now[0] + 1000)
    assert reopened.count() == 0  # pruned on open
    reopened.close()


# ---- with the real Prefect server


def read_back(delivery: str, at_least: int = 1, timeout_s: float = 30.0) -> list:
    """The server's stored retrain events of one delivery (``POST /api/events/filter``)."""
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    query = EventFilter(
        event=EventNameFilter(name=[EVENT_NAME]),
        resource=EventResourceFilter(id=[f"nerops.github.delivery.{delivery}"]),
    )
    deadline = time.monotonic() + timeout_s
    with get_client(sync_client=True) as prefect:
        while True:
            found = prefect.read_events(filter=query, limit=50).events
            if len(found) >= at_least or time.monotonic() > deadline:
                return found
            time.sleep(0.25)


def assert_the_event(found: list, delivery: str, body: bytes, payload: dict) -> None:
    assert len(found) == 1, found
    event = found[0]
    assert str(event.id) == event_id(delivery, hashlib.sha256(body).hexdigest())
    assert event.resource.id == f"nerops.github.delivery.{delivery}" and event.resource.name == "acme/nerops"
    assert [(r.id, r.role) for r in event.related] == [("nerops.github.repository.acme/nerops", "repository")]
    assert event.payload == {
        "delivery": delivery,
        "repository": "acme/nerops",
        "ref": "refs/heads/main",
        "commit": payload["after"],
        "before": payload["before"],
        "pusher": "alice",
        "matched": [MODEL_FILE],
        "files_complete": True,
        "reason": "1 of 2 changed file(s) match the training paths",
    }


def test_a_signed_training_push_posts_one_event_to_prefect(env, prefect_harness, _isolated_state):
    payload = training_push()
    payload["after"] = uuid.uuid4().hex + "0" * 8
    body, delivery = encode(payload), str(uuid.uuid4())
    with TestClient(create_app(Settings())) as real:  # the real poster, the harness's API URL
        response = real.post("/github", content=body, headers=headers(body, delivery=delivery))
        answer = response.json()
        assert (response.status_code, answer["verdict"], answer["matched"], answer["files_complete"]) == (
            202,
            "retrain",
            1,
            True,
        )
        assert answer["event"] == event_id(delivery, hashlib.sha256(body).hexdigest())
        assert_the_event(read_back(delivery), delivery, body, payload)
        again = real.post("/github", content=body, headers=headers(body, delivery=delivery))
        assert again.json()["verdict"] == "duplicate"
    time.sleep(1.0)
    assert len(read_back(delivery)) == 1  # still exactly one


def closed_url() -> str:
    return f"http://127.0.0.1:{free_port()}/api"


@contextlib.contextmanager
def black_hole():
    """A port that takes connections and never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield f"http://127.0.0.1:{server.getsockname()[1]}/api"


def post_in_this_context(app, body: bytes, sent: dict) -> httpx.Response:
    """Drive the app in this thread's context, so ``temporary_settings`` here is what the poster reads."""

    async def run():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as http:
            return await http.post("/github", content=body, headers=sent)

    return asyncio.run(run())


def test_prefect_unreachable_is_503_then_the_redelivery_is_accepted(env, monkeypatch, prefect_harness, _isolated_state):
    from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings

    monkeypatch.setenv("NEROPS_WEBHOOK_EVENT_TIMEOUT_S", "1.0")
    harness_url = get_current_settings().api.url
    payload = training_push()
    payload["after"] = uuid.uuid4().hex + "0" * 8
    body, delivery = encode(payload), str(uuid.uuid4())
    sent = headers(body, delivery=delivery)
    app = create_app(Settings())
    with black_hole() as silent:
        for url, why in [
            (closed_url(), "unreachable (ConnectError)"),
            (harness_url + "/nope", "answered 404"),
            (silent, "did not answer within 1 s"),
        ]:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                started = time.monotonic()
                down = post_in_this_context(app, body, sent)
                assert time.monotonic() - started < 5.0  # well within GitHub's 10 s
            answer = down.json()
            assert (down.status_code, answer["verdict"], answer["code"]) == (503, "unavailable", "event_not_accepted")
            assert why in answer["reason"] and "not consumed" in answer["reason"]
            assert consumed(_isolated_state) == 0
    assert read_back(delivery, timeout_s=0.5) == []
    back = post_in_this_context(app, body, sent)  # GitHub's redelivery: the same id, the server reachable
    assert (back.status_code, back.json()["verdict"]) == (202, "retrain")
    assert consumed(_isolated_state) == 1
    assert_the_event(read_back(delivery), delivery, body, payload)
    app.state.receiver.store.close()


def test_the_server_listens_on_127_0_0_1_and_answers_over_http(prefect_harness, tmp_path):
    """``python -m nerops.triggers.receiver`` under uvicorn: a ping, a training push, a chunked oversized body."""
    from prefect.settings import get_current_settings

    port = free_port()
    environment = {
        **os.environ,
        "NEROPS_STATE_DIR": str(tmp_path / "state"),
        "NEROPS_GITHUB_WEBHOOK_SECRET": SECRET,
        "NEROPS_WEBHOOK_MAX_BODY_BYTES": str(LIMIT),
        "NEROPS_WEBHOOK_PORT": str(port),  # the port from the setting
        "PREFECT_API_URL": get_current_settings().api.url,
        "PYTHONUNBUFFERED": "1",
    }
    server = subprocess.Popen(
        [sys.executable, "-m", "nerops.triggers.receiver", "--host", "127.0.0.1"],
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.communicate()[1]
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "the receiver did not start within 60 s"
            time.sleep(0.2)
        body = encode(ping())
        pong = httpx.post(f"{base}/github", content=body, headers=headers(body, event="ping"), timeout=10)
        assert (pong.status_code, pong.json()["verdict"], pong.json()["hook_id"]) == (200, "pong", 7)

        payload = training_push()
        payload["after"] = uuid.uuid4().hex + "0" * 8
        body, delivery = encode(payload), str(uuid.uuid4())
        retrain = httpx.post(f"{base}/github", content=body, headers=headers(body, delivery=delivery), timeout=10)
        assert (retrain.status_code, retrain.json()["verdict"]) == (202, "retrain")
        assert_the_event(read_back(delivery), delivery, body, payload)

        big = b'{"pad": "' + b"x" * LIMIT + b'"}'
        chunked = httpx.post(f"{base}/github", content=iter([big[:3000], big[3000:]]), headers=headers(big), timeout=10)
        assert (chunked.status_code, chunked.json()["code"]) == (413, "payload_too_large")
    finally:
        server.terminate()
        try:
            _, stderr = server.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            _, stderr = server.communicate()
    # uvicorn shuts down cleanly on SIGTERM, then re-raises the signal: exit status -15
    assert server.returncode in (0, -signal.SIGTERM), stderr
    assert "Application shutdown complete" in stderr
    assert f"receiving GitHub deliveries on http://127.0.0.1:{port}/github" in stderr
    log = (tmp_path / "state" / "webhook" / "deliveries.log").read_text().splitlines()
    assert [json.loads(line)["verdict"] for line in log] == ["pong", "retrain", "refused"]


def test_the_poster_sends_prefects_credentials(monkeypatch):
    """``api.auth_string`` (basic) wins over ``api.key`` (bearer), as in Prefect's own client."""
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY, PREFECT_API_URL, temporary_settings

    seen: list[httpx.Request] = []
    real_client = httpx.AsyncClient

    def capturing(**kwargs):
        def answer(request: httpx.Request) -> httpx.Response:
            seen.append(request)
            return httpx.Response(204)

        return real_client(transport=httpx.MockTransport(answer), timeout=kwargs.get("timeout"))

    monkeypatch.setattr(httpx, "AsyncClient", capturing)
    updates = {PREFECT_API_URL: "http://prefect.invalid/api", PREFECT_API_KEY: "k-1"}
    with temporary_settings(updates=updates):
        asyncio.run(PrefectEvents(2.0).post([{"id": "x"}]))
    with temporary_settings(updates={**updates, PREFECT_API_AUTH_STRING: "admin:pass"}):
        asyncio.run(PrefectEvents(2.0).post([{"id": "y"}]))
    assert [str(r.url) for r in seen] == ["http://prefect.invalid/api/events"] * 2
    assert seen[0].headers["authorization"] == "Bearer k-1"
    assert seen[1].headers["authorization"] == "Basic YWRtaW46cGFzcw=="
    assert json.loads(seen[1].content) == [{"id": "y"}]
