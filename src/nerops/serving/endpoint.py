"""The local online endpoint: Azure ML managed-online-endpoint semantics on one machine.

    client ──▶ endpoint (this ASGI app, under uvicorn)
                 │ key auth (Bearer, constant-time), body size limit
                 │ route: header azureml-model-deployment pins, else traffic weights (at
                 │ random, or sticky by the x-nerops-routing-key header)
                 ├──▶ deployment "blue":  worker processes (pool.py) ──▶ scoring.py
                 └─ ─▶ deployment "green": mirror copy, answer discarded, measured and compared
                 │ telemetry: system metrics + model signals, per deployment and traffic class
                 │   (live, mirror, probe, smoke: header x-nerops-traffic-class), shadow agreement
    operator ──▶ /control/...: deployments, traffic, mirror (read-modify-write with If-Match),
                 each change saved atomically and written to the audit ledger

System metrics are measured here, where the client gets its answer: a request that fails
because a worker crashed or hung is counted against its deployment.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from pathlib import Path

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nerops.errors import NeropsError
from nerops.serving import openapi
from nerops.serving.control import MAX_CONTROL_BODY, EndpointBusyError, EndpointController, hold_serve_lock
from nerops.serving.credentials import ControlKeys, control_keys
from nerops.serving.pool import PoolSettings, Unanswered
from nerops.serving.scoring import Limits, ScoringError, check_content_type
from nerops.serving.state import MirrorPicker, TrafficPicker
from nerops.serving.worker import SIGNALS_HEADER
from nerops.telemetry import DocumentSignals, RequestRecord, Telemetry
from nerops.telemetry.agreement import compare_answers

log = logging.getLogger("nerops.endpoint")
PIN_HEADER = "azureml-model-deployment"
ROUTING_HEADER = "x-nerops-routing-key"  # a document or session id: sticky routing
# what a request is for, in telemetry: live (routed by weight; pinned by a client, e.g. sticky), probe
# (synthetic, sent on purpose) or smoke (a readiness check). Pinned without it: smoke; else live.
CLASS_HEADER = "x-nerops-traffic-class"
CLIENT_CLASSES = ("live", "probe", "smoke")
# a pinned probe naming a second deployment: both answer, the pinned one's answer goes back, and the
# two are compared like a mirror copy (agreement recorded on the pinned deployment, class probe)
PAIR_HEADER = "x-nerops-probe-pair"
MAX_SHADOWS_IN_FLIGHT = 64


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ScoringRoute:
    """POST /score: authenticate, read the body within limits, pick a deployment, forward, measure."""

    def __init__(
        self,
        controller: EndpointController,
        telemetry: Telemetry,
        limits: Limits,
        seed: int | None = None,
        max_shadows: int = MAX_SHADOWS_IN_FLIGHT,
    ) -> None:
        self.controller = controller
        self.telemetry = telemetry
        self.limits = limits
        self.max_shadows = max_shadows
        self._rng = random.Random(seed)
        self._picker: TrafficPicker | None = None
        self._mirror: MirrorPicker | None = None
        self._state = None
        self._background: set[asyncio.Task] = set()

    def _pickers(self) -> tuple[TrafficPicker, MirrorPicker]:
        state = self.controller.state  # immutable, replaced on every change: identity tells a change
        if self._picker is None or self._state is not state:
            self._picker = TrafficPicker(state.traffic, list(state.deployments), self._rng)
            self._mirror, self._state = MirrorPicker(state.mirror, self._rng), state
        return self._picker, self._mirror

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        if not self.controller.keys.check(request.headers.get("authorization")):
            unauthorized = error(401, "unauthorized", "missing or wrong key: send 'Authorization: Bearer <key>'")
            return self._record(unauthorized, "", started)
        pinned = request.headers.get(PIN_HEADER)
        traffic_class = request.headers.get(CLASS_HEADER, "smoke" if pinned else "live").strip().lower()
        if traffic_class not in CLIENT_CLASSES:
            bad = error(400, "bad_traffic_class", f"{CLASS_HEADER} must be one of {', '.join(CLIENT_CLASSES)}")
            return self._record(bad, "", started)
        pair = request.headers.get(PAIR_HEADER)
        if pair is not None and (not pinned or traffic_class != "probe" or pair not in self.controller.pools):
            why = f"{PAIR_HEADER} needs a pinned probe ({CLASS_HEADER}: probe) and a deployment that serves"
            return self._record(error(400, "bad_probe_pair", why), "", started, traffic_class)
        picker, mirror = self._pickers()
        name = pinned or picker.pick(request.headers.get(ROUTING_HEADER))
        if name is None:
            return self._record(error(503, "no_traffic", "no deployment takes traffic"), "", started, traffic_class)
        pool = self.controller.pools.get(name)
        reason = self.controller.down.get(name) or (pool.down_reason if pool else None)
        if reason:
            down = error(503, "deployment_down", f"deployment {name!r} is down: {reason}")
            return self._record(down, name, started, traffic_class)
        if pool is None:
            unknown = error(404, "unknown_deployment", f"no deployment named {name!r}")
            return self._record(unknown, "", started, traffic_class)
        try:
            check_content_type(request.headers.get("content-type"))
            body = await _read_limited(request, self.limits.max_body_bytes)
        except ScoringError as exc:
            return self._record(JSONResponse(exc.body(), status_code=exc.status), name, started, traffic_class)
        response = await self._forward(name, body, request.headers.get("content-type", ""), traffic_class)
        if pair is not None:  # measure the pinned answer first: its latency is its own
            self._measure(response.status_code, name, started, traffic_class)
            await self._probe_pair(name, pair, body, request.headers.get("content-type", ""), response)
            response.headers[PIN_HEADER] = name
            return response
        if not pinned and traffic_class == "live":
            for shadow in mirror.pick():
                if len(self._background) >= self.max_shadows:  # never queue without bound: count the drop
                    self._mirror_dropped(shadow)
                    continue
                copy = self._shadow(shadow, body, request.headers.get("content-type", ""), response)
                task = asyncio.create_task(copy)
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return self._record(response, name, started, traffic_class)

    async def _forward(self, name: str, body: bytes, content_type: str, traffic_class: str) -> Response:
        pool = self.controller.pools[name]
        try:
            upstream = await pool.dispatch(body, content_type)
        except Unanswered as exc:
            return error(exc.status, exc.code, exc.message)
        signals = upstream.headers.get(SIGNALS_HEADER.decode())
        if signals:
            self.telemetry.record_documents(
                deployment=name,
                model_version=pool.model_version,
                documents=[DocumentSignals(c, e, per) for c, e, per in json.loads(signals)],
                traffic_class=traffic_class,
            )
        return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

    async def _shadow(self, name: str, body: bytes, content_type: str, live: Response) -> None:
        """A mirror copy: measured as traffic class mirror, compared with the live answer (counts only)."""
        started = time.perf_counter()
        if name not in self.controller.pools:
            self._mirror_dropped(name)
            return
        response = await self._forward(name, body, content_type, "mirror")
        self._measure(response.status_code, name, started, "mirror")
        if response.status_code != 200:
            self._mirror_dropped(name)  # busy, timed out or failed: no answer to compare
        elif live.status_code == 200 and not self._compare(name, response, live, "mirror"):
            self._mirror_dropped(name)  # answers that cannot be compared: counted, not silently lost

    async def _probe_pair(self, name: str, pair: str, body: bytes, content_type: str, answer: Response) -> None:
        started = time.perf_counter()
        reference = await self._forward(pair, body, content_type, "probe")
        self._measure(reference.status_code, pair, started, "probe")
        if answer.status_code == 200 and reference.status_code == 200:
            self._compare(name, answer, reference, "probe")

    def _compare(self, name: str, candidate: Response, reference: Response, traffic_class: str) -> bool:
        """Record the agreement of two answers on the candidate's arm (counts only); False if not comparable."""
        try:
            agreements = compare_answers(json.loads(candidate.body), json.loads(reference.body))
        except ValueError:
            return False
        pool = self.controller.pools.get(name)
        if not agreements or pool is None:
            return False
        self.telemetry.record_agreement(
            deployment=name, model_version=pool.model_version, agreements=agreements, traffic_class=traffic_class
        )
        return True

    def _mirror_dropped(self, name: str) -> None:
        pool = self.controller.pools.get(name)
        self.telemetry.record_mirror_dropped(deployment=name, model_version=pool.model_version if pool else "")

    def _record(self, response: Response, name: str, started: float, traffic_class: str = "live") -> Response:
        self._measure(response.status_code, name, started, traffic_class)
        response.headers[PIN_HEADER] = name
        return response

    def _measure(self, status: int, name: str, started: float, traffic_class: str) -> None:
        pool = self.controller.pools.get(name)
        self.telemetry.record_request(
            RequestRecord(
                endpoint=self.controller.state.name,
                deployment=name,
                model_version=pool.model_version if pool else "",
                status=status,
                latency_ms=1000 * (time.perf_counter() - started),
                traffic_class=traffic_class,
            )
        )


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ScoringError(413, "payload_too_large", f"body is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ScoringError(413, "payload_too_large", f"body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def build_app(
    controller: EndpointController,
    telemetry: Telemetry,
    limits: Limits = Limits(),
    *,
    seed: int | None = None,
    max_shadows: int = MAX_SHADOWS_IN_FLIGHT,
) -> Starlette:
    """The endpoint's ASGI app; ``seed`` makes the random assignment of requests repeatable, ``max_shadows``
    bounds the mirror copies in flight (beyond it they are dropped and counted)."""
    scoring = ScoringRoute(controller, telemetry, limits, seed, max_shadows)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "endpoint": controller.state.name, "deployments": len(controller.pools)})

    async def spec(request: Request) -> Response:
        return JSONResponse(openapi.spec(controller.state.name, limits))

    async def control(request: Request) -> Response:
        authorization = request.headers.get("authorization")
        credential = controller.control_keys.match(authorization) if controller.control_keys else None
        if credential is None and controller.keys.check(authorization):
            message = "a scoring key cannot change or read the endpoint: use the control credential"
            return error(403, "forbidden", message)
        if credential is None:
            return error(401, "unauthorized", "missing or wrong control credential: send 'Authorization: Bearer <key>'")
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > MAX_CONTROL_BODY:
            return error(413, "payload_too_large", f"control bodies are at most {MAX_CONTROL_BODY} bytes")
        try:
            status, payload, headers = await controller.handle(
                request.method,
                request.path_params.get("rest", ""),
                await _read_limited(request, MAX_CONTROL_BODY),
                request.headers,
                credential=credential,
            )
        except ScoringError as exc:  # the body was over the limit
            return JSONResponse(exc.body(), status_code=exc.status)
        except NeropsError as exc:
            return error(getattr(exc, "status", 409), getattr(exc, "code", "conflict"), str(exc))
        return JSONResponse(payload, status_code=status, headers=headers)

    async def lifespan(app: Starlette):
        await controller.start()
        try:
            yield
        finally:
            await controller.stop()
            telemetry.shutdown()

    async def not_found(request: Request, exc: Exception) -> Response:
        return error(404, "not_found", f"no route {request.url.path}")

    async def not_allowed(request: Request, exc: Exception) -> Response:
        return error(405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}")

    async def server_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s", request.url.path)
        return error(500, "internal_error", "the endpoint failed; see its log")

    routes = [
        Route("/score", scoring.handle, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/openapi.json", spec, methods=["GET"]),
        Route("/control/{rest:path}", control, methods=["GET", "PUT", "POST", "DELETE"]),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_allowed, 500: server_error},
        middleware=[Middleware(RequestIds)],
    )


class RequestIds:
    """Every answer carries ``x-request-id`` (a random id, never derived from the request): callers and
    operators can name a request in a report without quoting it."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = uuid.uuid4().hex.encode()

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id)]
            await send(message)

        await self.app(scope, receive, send_with_id)


def main(argv: list[str] | None = None) -> None:
    """``python -m nerops.serving.endpoint --name NAME --port PORT``: run an endpoint in the foreground."""
    import argparse

    import uvicorn

    from nerops.lifecycle import open_governance
    from nerops.settings import get_settings
    from nerops.telemetry import local_telemetry
    from nerops.telemetry.disabled import DisabledTelemetry

    parser = argparse.ArgumentParser(description="Run a local online endpoint.")
    parser.add_argument("--name", default="resume-ner")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8910)
    parser.add_argument(
        "--export-interval",
        type=float,
        default=get_settings().telemetry_export_interval_s,
        help="Telemetry export interval (s; default NEROPS_TELEMETRY_EXPORT_INTERVAL_S, 5).",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings().for_endpoint(args.name)  # the registered model this endpoint serves
    folder = settings.state / "endpoints" / args.name
    try:
        lock = hold_serve_lock(folder)  # one serving process per endpoint name; held until exit
    except EndpointBusyError as exc:
        raise SystemExit(f"error: {exc}") from None
    controller = EndpointController.open(
        folder,
        args.name,
        governance=open_governance(settings, actor=f"endpoint:{args.name}"),
        pool_settings=PoolSettings.from_settings(settings),
        control_keys=ControlKeys(control_keys(settings)),
    )
    telemetry = (
        local_telemetry(
            settings.state / "telemetry" / "telemetry.db", endpoint=args.name, export_interval_s=args.export_interval
        )
        if settings.telemetry_enabled
        else DisabledTelemetry()
    )
    app = build_app(
        controller, telemetry, seed=settings.endpoint_routing_seed, max_shadows=settings.endpoint_max_mirror_in_flight
    )
    Path(folder / "endpoint.url").write_text(f"http://{args.host}:{args.port}\n")
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, http="httptools", loop="uvloop"
    )
    lock.close()


if __name__ == "__main__":
    main()
