"""The GitHub webhook receiver: ``POST /github`` turns a signed push to the watched branch that touches the
training paths into a ``nerops.github.retrain-requested`` event on the Prefect server.

    GitHub ──▶ POST /github (this ASGI app, under uvicorn; ``nerops webhook serve``)
                 │ 1 rate limit (token bucket, all callers)           429 + Retry-After
                 │ 2 Content-Length over the limit                    413, before reading
                 │ 3 Content-Type application/json                    415
                 │ 4 read the body, stop past the limit (chunked)     413
                 │ 5 X-Hub-Signature-256 over the raw body            401 missing / 400 malformed / 403 wrong
                 │ 6 X-GitHub-Delivery, X-GitHub-Event (push, ping)   400
                 │ 7 JSON object                                      400
                 │ 8 seen: same delivery id, or same body (replay)    200 duplicate
                 │ 9 decide (github.py)                               200 pong / 200 ignored
                 └ 10 retrain: POST <PREFECT_API_URL>/events          202 retrain, or 503 (not consumed)

The rate limit comes first, before the signature: it bounds the work (reading up to 25 MB, an HMAC, a JSON
parse) anyone who can reach the port can cause. Its cost: a flood of unsigned requests also delays GitHub's
deliveries (GitHub does not retry by itself; redeliver them from the hook's "Recent Deliveries"). It is one
bucket for all callers because GitHub delivers from many addresses, and behind a proxy every caller has the
proxy's address.

A delivery is consumed (remembered as done, ``deliveries.py``) only once nothing is left to do: at once for a
ping or an ignored push, after the Prefect server answered 2xx to the event otherwise. The event is posted over
HTTP here (``emit_event`` only queues it in the process and cannot tell whether the server got it). One
process only: deliveries in flight are known in memory (a second copy meanwhile gets a 409).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import math
import re
import ssl
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import click
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nerops.errors import ConfigurationError
from nerops.settings import Settings, get_settings, prefect_api_url
from nerops.triggers import github
from nerops.triggers.deliveries import DeliveryLog, DeliveryStore

log = logging.getLogger("nerops.webhook")
DELIVERY_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")  # GitHub's are GUIDs
_SAFE_EVENT = re.compile(r"[a-z_]{1,64}\Z")  # an unknown event name is logged only if it looks like one
THREAD_ABOVE_BYTES = 256 * 1024  # hash and parse larger bodies off the event loop
MAX_CONCURRENCY = 64  # connections served at once; beyond, uvicorn answers 503


class Refusal(Exception):
    """A delivery refused: its status, a stable code and a reason safe to log."""

    def __init__(self, status: int, code: str, reason: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(reason)
        self.status, self.code, self.reason, self.headers = status, code, reason, headers or {}


class TokenBucket:
    """``rate`` tokens a second, at most ``burst`` saved; ``take()`` is 0.0 when it took one, else the wait."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self._clock = rate, burst, clock
        self._tokens, self._updated = float(burst), clock()

    def take(self) -> float:
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


class EventNotAccepted(Exception):
    """The Prefect server did not take the event (unreachable, timed out, or not a 2xx)."""


class PrefectEvents:
    """Posts events to ``<api.url>/events`` of the current Prefect settings and checks the answer (204).

    URL, credentials (``api.auth_string``: basic, else ``api.key``: bearer) and TLS options are read on every
    post from ``prefect.settings.get_current_settings()``, as the Prefect client reads them."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s

    async def post(self, events: list[dict]) -> None:
        import base64

        import httpx
        from prefect.settings import get_current_settings

        api = get_current_settings().api
        if not api.url:
            raise EventNotAccepted("PREFECT_API_URL is not set")
        headers = {"content-type": "application/json"}
        if api.auth_string is not None and api.auth_string.get_secret_value():
            token = base64.b64encode(api.auth_string.get_secret_value().encode()).decode()
            headers["authorization"] = f"Basic {token}"
        elif api.key is not None and api.key.get_secret_value():
            headers["authorization"] = f"Bearer {api.key.get_secret_value()}"
        verify: bool | ssl.SSLContext = True
        if api.tls_insecure_skip_verify:
            verify = False
        elif api.ssl_cert_file:
            verify = ssl.create_default_context(cafile=api.ssl_cert_file)
        url = f"{api.url.rstrip('/')}/events"
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, verify=verify) as client:
                response = await asyncio.wait_for(
                    client.post(url, content=json.dumps(events), headers=headers), self.timeout_s
                )
        except (TimeoutError, httpx.TimeoutException):
            raise EventNotAccepted(f"the Prefect API did not answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise EventNotAccepted(f"the Prefect API is unreachable ({type(exc).__name__})") from None
        if not 200 <= response.status_code < 300:
            raise EventNotAccepted(f"the Prefect API answered {response.status_code}")


@dataclass
class Delivery:
    """What is known of the delivery being handled (for the answer and the log line)."""

    id: str | None = None
    event: str | None = None
    counts: dict[str, Any] = field(default_factory=dict)


class Receiver:
    """``POST /github``, step by step (see the module's docstring)."""

    def __init__(
        self, settings: Settings, poster: PrefectEvents, store: DeliveryStore, deliveries: DeliveryLog, clock
    ) -> None:
        self.settings = settings
        self.poster = poster
        self.store = store
        self.deliveries = deliveries
        self.secrets = accepted_secrets(settings)
        self.bucket = TokenBucket(settings.webhook_rate_per_s, settings.webhook_burst, clock)
        self.limit = settings.webhook_max_body_bytes
        self._in_flight: set[str] = set()  # delivery ids and body hashes being handled

    async def handle(self, request: Request) -> Response:
        delivery = Delivery()
        try:
            status, answer = await self._handle(request, delivery)
        except Refusal as refusal:
            verdict = "unavailable" if refusal.status == 503 else "refused"
            answer = {"verdict": verdict, "code": refusal.code, "reason": refusal.reason, "delivery": delivery.id}
            return self._answer(refusal.status, answer, delivery, refusal.headers)
        return self._answer(status, answer, delivery)

    async def _handle(self, request: Request, delivery: Delivery) -> tuple[int, dict]:
        wait = self.bucket.take()
        if wait > 0:
            retry = str(max(1, math.ceil(wait)))
            raise Refusal(429, "rate_limited", f"too many deliveries; retry in {retry} s", {"retry-after": retry})
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self.limit:
            raise Refusal(413, "payload_too_large", f"the body is {declared} bytes; the limit is {self.limit}")
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            why = "the body must be application/json: set the webhook's content type to application/json"
            raise Refusal(415, "unsupported_content_type", why)
        body = await self._read(request)

        header = _header(request, "x-hub-signature-256")
        signature = await _off_loop(len(body), github.check_signature, header, body, self.secrets)
        if signature is github.Signature.MISSING:
            raise Refusal(401, "missing_signature", "no X-Hub-Signature-256 header: give the webhook a secret")
        if signature is github.Signature.MALFORMED:
            raise Refusal(400, "malformed_signature", "X-Hub-Signature-256 must be 'sha256=' and 64 hex digits")
        if signature is not github.Signature.VALID:
            raise Refusal(403, "bad_signature", "X-Hub-Signature-256 does not match the body under any accepted secret")

        delivery_id = _header(request, "x-github-delivery")
        if not delivery_id or not DELIVERY_ID.match(delivery_id):
            raise Refusal(400, "missing_delivery", "no valid X-GitHub-Delivery header (an id of letters, digits, -)")
        delivery.id = delivery_id
        event = _header(request, "x-github-event")
        if not github.known_event(event):
            delivery.event = event if event and _SAFE_EVENT.match(event) else None
            named = "no X-GitHub-Event header" if not event else f"event {delivery.event or '(unreadable)'!r}"
            why = f"{named} is not handled: only {', '.join(github.KNOWN_EVENTS)}; subscribe the hook to push only"
            raise Refusal(400, "unsupported_event", why)
        delivery.event = event
        payload = await _off_loop(len(body), _parse, body)
        body_sha = hashlib.sha256(body).hexdigest()

        seen = self.store.seen(delivery_id, body_sha)
        if seen is not None:
            if seen.by == "delivery":
                reason = f"delivery {delivery_id} was already handled (verdict {seen.verdict})"
            else:
                reason = f"the same body came as delivery {seen.delivery} (verdict {seen.verdict}): a replay or a copy"
            return 200, {"verdict": "duplicate", "delivery": delivery_id, "reason": reason}
        if delivery_id in self._in_flight or body_sha in self._in_flight:
            raise Refusal(409, "in_progress", "the same delivery is being handled now; redeliver it later")
        self._in_flight.update((delivery_id, body_sha))
        try:
            return await self._decide(delivery, event, payload, body_sha)
        finally:
            self._in_flight.difference_update((delivery_id, body_sha))

    async def _decide(self, delivery: Delivery, event: str, payload: dict, body_sha: str) -> tuple[int, dict]:
        assert delivery.id is not None
        try:
            decision = github.decide(
                event,
                payload,
                branch=self.settings.webhook_branch,
                repository=self.settings.webhook_repository,
                now=time.time(),
                max_age_s=self.settings.webhook_replay_window_s,
            )
        except github.PayloadError as exc:
            raise Refusal(400, "malformed_payload", str(exc)) from None
        if event == "push":
            delivery.counts = {"changed": decision.changed, "matched": len(decision.matched)}
        if decision.verdict == "pong":
            self.store.consume(delivery.id, body_sha, event, "pong")
            pong = {"verdict": "pong", "delivery": delivery.id, "reason": decision.reason}
            return 200, {**pong, "zen": decision.zen, "hook_id": decision.hook_id}
        if not decision.wanted:
            self.store.consume(delivery.id, body_sha, event, "ignored")
            return 200, {"verdict": "ignored", "delivery": delivery.id, "reason": decision.reason}
        retrain = github.retrain_event(decision, delivery.id, body_sha)
        try:
            await self.poster.post([retrain])
        except EventNotAccepted as exc:
            why = f"the retrain event was not accepted: {exc}; the delivery is not consumed, redeliver it later"
            raise Refusal(503, "event_not_accepted", why) from None
        self.store.consume(delivery.id, body_sha, event, "retrain")
        delivery.counts["files_complete"] = decision.files_complete
        return 202, {
            "verdict": "retrain",
            "delivery": delivery.id,
            "reason": decision.reason,
            "event": retrain["id"],
            "matched": len(decision.matched),
            "files_complete": decision.files_complete,
        }

    async def _read(self, request: Request) -> bytes:
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.limit:
                raise Refusal(413, "payload_too_large", f"the body exceeds the limit of {self.limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    def _answer(self, status: int, answer: dict, delivery: Delivery, headers: dict[str, str] | None = None) -> Response:
        line = self.deliveries.write(
            delivery=delivery.id,
            event=delivery.event,
            verdict=answer["verdict"],
            status=status,
            code=answer.get("code"),
            reason=answer.get("reason"),
            **delivery.counts,
        )
        level = logging.WARNING if status >= 500 or status in (401, 403) else logging.INFO
        log.log(
            level,
            "delivery %s (%s): %d %s: %s",
            line["delivery"],
            line["event"],
            status,
            line["verdict"],
            line["reason"],
        )
        return JSONResponse(answer, status_code=status, headers=headers)


def _header(request: Request, name: str) -> str | None:
    value = request.headers.get(name)
    return value.strip() if value is not None else None


def _parse(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise Refusal(400, "malformed_json", "the body is not valid JSON (UTF-8)") from None
    if not isinstance(payload, dict):
        raise Refusal(400, "malformed_json", "the body is not a JSON object")
    return payload


async def _off_loop(size: int, fn, *args):
    return await asyncio.to_thread(fn, *args) if size > THREAD_ABOVE_BYTES else fn(*args)


def accepted_secrets(settings: Settings) -> list[str]:
    """The secrets a signature may use: the current one, and the previous one while rotating."""
    secrets = [
        s.get_secret_value()
        for s in (settings.github_webhook_secret, settings.github_webhook_secret_previous)
        if s is not None and s.get_secret_value()
    ]
    if settings.github_webhook_secret is None or not settings.github_webhook_secret.get_secret_value():
        raise ConfigurationError(
            "no webhook secret: set NEROPS_GITHUB_WEBHOOK_SECRET to the secret of the GitHub webhook "
            "(Settings > Webhooks > Secret); the receiver refuses to run unsigned"
        )
    return secrets


def create_app(settings: Settings, *, poster: PrefectEvents | None = None, clock=time.monotonic) -> Starlette:
    """The receiver's ASGI app. Raises ``ConfigurationError`` without a secret. Its store and log are opened
    here and closed when the app shuts down (``with TestClient(app)``, or uvicorn's lifespan)."""
    accepted_secrets(settings)
    folder = settings.state / "webhook"
    store = DeliveryStore(folder / "deliveries.db", settings.webhook_replay_window_s)
    deliveries = DeliveryLog(folder / "deliveries.log", settings.webhook_log_max_bytes, settings.webhook_log_backups)
    receiver = Receiver(settings, poster or PrefectEvents(settings.webhook_event_timeout_s), store, deliveries, clock)

    async def health(request: Request) -> Response:
        ok = store.healthy()
        return JSONResponse({"status": "ok" if ok else "failing", "store": ok}, status_code=200 if ok else 503)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        try:
            yield
        finally:
            store.close()
            deliveries.close()

    async def not_found(request: Request, exc: Exception) -> Response:
        return JSONResponse({"verdict": "refused", "code": "not_found", "reason": "no such route"}, status_code=404)

    async def not_allowed(request: Request, exc: Exception) -> Response:
        reason = f"{request.method} is not allowed on {request.url.path}"
        return JSONResponse({"verdict": "refused", "code": "method_not_allowed", "reason": reason}, status_code=405)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        body = {"verdict": "failed", "code": "internal_error", "reason": "the receiver failed; see its log"}
        return JSONResponse(body, status_code=500)

    app = Starlette(
        routes=[Route("/github", receiver.handle, methods=["POST"]), Route("/health", health, methods=["GET"])],
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed, 500: server_error},
    )
    app.state.receiver = receiver
    return app


def _check_start(settings: Settings) -> None:
    """Refuse to start without a secret or without a Prefect server to post to."""
    try:
        accepted_secrets(settings)
        prefect_api_url(
            "(e.g. http://127.0.0.1:4200/api): the receiver posts its events there, and a temporary in-process "
            "server would be gone with the process"
        )
    except ConfigurationError as exc:
        raise click.ClickException(str(exc)) from None


@click.group(name="webhook")
def webhook() -> None:
    """The GitHub webhook receiver: signed pushes that touch the training paths request a retrain."""


@webhook.command()
@click.option("--host", default=None, help="Address to listen on  [default: NEROPS_WEBHOOK_HOST or 127.0.0.1]")
@click.option(
    "--port", type=click.IntRange(1, 65535), default=None, help="Port  [default: NEROPS_WEBHOOK_PORT or 8470]"
)
def serve(host: str | None, port: int | None) -> None:
    """Receive GitHub deliveries on POST /github (GET /health for supervisors) until interrupted."""
    import uvicorn

    settings = get_settings()
    _check_start(settings)
    host, port = host or settings.webhook_host, port or settings.webhook_port
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    app = create_app(settings)
    folder = settings.state / "webhook"
    log.info("receiving GitHub deliveries on http://%s:%d/github (store and log in %s)", host, port, folder)
    uvicorn.run(app, host=host, port=port, log_level="info", access_log=False, limit_concurrency=MAX_CONCURRENCY)


def main(argv: list[str] | None = None) -> None:
    """``python -m nerops.triggers.receiver [--host H] [--port N]``: ``nerops webhook serve``."""
    serve.main(args=argv, prog_name="python -m nerops.triggers.receiver")


if __name__ == "__main__":
    main()
