"""The local online endpoint: Azure ML managed-online-endpoint semantics on one machine.

    client ──▶ endpoint (this ASGI app, under uvicorn)
                 │ key auth (Bearer, constant-time), body size limit
                 │ route: header azureml-model-deployment pins, else traffic weights
                 ├──▶ deployment "blue":  worker processes (pool.py) ──▶ scoring.py
                 └─ ─▶ deployment "green": mirror copy, answer discarded, measured
                 │ telemetry: system metrics + model signals, per deployment
    operator ──▶ /control/...: deployments, traffic, mirror (read-modify-write with If-Match),
                 each change saved atomically and written to the audit ledger

System metrics are measured here, where the client gets its answer: a request that fails
because a worker crashed or hung is counted against its deployment.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from nerops.errors import NeropsError
from nerops.serving import openapi
from nerops.serving.control import EndpointBusyError, EndpointController, hold_serve_lock
from nerops.serving.pool import PoolSettings
from nerops.serving.scoring import Limits, ScoringError, check_content_type
from nerops.serving.state import MirrorPicker, WeightedPicker
from nerops.serving.worker import SIGNALS_HEADER
from nerops.telemetry import DocumentSignals, RequestRecord, Telemetry

log = logging.getLogger("nerops.endpoint")
PIN_HEADER = "azureml-model-deployment"


def error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status, headers=headers)


class ScoringRoute:
    """POST /score: authenticate, read the body within limits, pick a deployment, forward, measure."""

    def __init__(self, controller: EndpointController, telemetry: Telemetry, limits: Limits) -> None:
        self.controller = controller
        self.telemetry = telemetry
        self.limits = limits
        self._picker: WeightedPicker | None = None
        self._mirror: MirrorPicker | None = None
        self._state = None
        self._background: set[asyncio.Task] = set()

    def _pickers(self) -> tuple[WeightedPicker, MirrorPicker]:
        state = self.controller.state  # immutable, replaced on every change: identity tells a change
        if self._picker is None or self._state is not state:
            self._picker, self._mirror, self._state = WeightedPicker(state.traffic), MirrorPicker(state.mirror), state
        return self._picker, self._mirror

    async def handle(self, request: Request) -> Response:
        started = time.perf_counter()
        if not self.controller.keys.check(request.headers.get("authorization")):
            unauthorized = error(401, "unauthorized", "missing or wrong key: send 'Authorization: Bearer <key>'")
            return self._record(unauthorized, "", started)
        pinned = request.headers.get(PIN_HEADER)
        picker, mirror = self._pickers()
        name = pinned or picker.pick()
        if name is None:
            return self._record(error(503, "no_traffic", "no deployment takes traffic"), "", started)
        pool = self.controller.pools.get(name)
        reason = self.controller.down.get(name) or (pool.down_reason if pool else None)
        if reason:
            return self._record(error(503, "deployment_down", f"deployment {name!r} is down: {reason}"), name, started)
        if pool is None:
            return self._record(error(404, "unknown_deployment", f"no deployment named {name!r}"), "", started)
        try:
            check_content_type(request.headers.get("content-type"))
            body = await _read_limited(request, self.limits.max_body_bytes)
        except ScoringError as exc:
            return self._record(JSONResponse(exc.body(), status_code=exc.status), name, started)
        response = await self._forward(name, body, request.headers.get("content-type", ""), mirrored=False)
        if not pinned:
            for shadow in mirror.pick():
                task = asyncio.create_task(self._shadow(shadow, body, request.headers.get("content-type", "")))
                self._background.add(task)
                task.add_done_callback(self._background.discard)
        return self._record(response, name, started)

    async def _forward(self, name: str, body: bytes, content_type: str, *, mirrored: bool) -> Response:
        pool = self.controller.pools[name]
        try:
            slot = await pool.acquire()
        except TimeoutError as exc:
            return error(503, "no_live_worker", str(exc))
        try:
            upstream = await pool.forward(slot, body, content_type)
        except Exception as exc:  # timed out, or the worker died: 504 or 502, by what happened to it
            status, code, message = pool.failure(slot, exc)
            log.warning("deployment %s: %s (%s)", name, code, type(exc).__name__)
            return error(status, code, message)
        finally:
            pool.release(slot)
        signals = upstream.headers.get(SIGNALS_HEADER.decode())
        if signals:
            self.telemetry.record_documents(
                deployment=name,
                model_version=pool.model_version,
                documents=[DocumentSignals(c, e, per) for c, e, per in json.loads(signals)],
                mirrored=mirrored,
            )
        return Response(upstream.content, status_code=upstream.status_code, media_type="application/json")

    async def _shadow(self, name: str, body: bytes, content_type: str) -> None:
        started = time.perf_counter()
        with contextlib.suppress(KeyError):
            response = await self._forward(name, body, content_type, mirrored=True)
            self._measure(response.status_code, name, started, mirrored=True)

    def _record(self, response: Response, name: str, started: float) -> Response:
        self._measure(response.status_code, name, started, mirrored=False)
        response.headers[PIN_HEADER] = name
        return response

    def _measure(self, status: int, name: str, started: float, *, mirrored: bool) -> None:
        pool = self.controller.pools.get(name)
        self.telemetry.record_request(
            RequestRecord(
                endpoint=self.controller.state.name,
                deployment=name,
                model_version=pool.model_version if pool else "",
                status=status,
                latency_ms=1000 * (time.perf_counter() - started),
                mirrored=mirrored,
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


def build_app(controller: EndpointController, telemetry: Telemetry, limits: Limits = Limits()) -> Starlette:
    scoring = ScoringRoute(controller, telemetry, limits)

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "endpoint": controller.state.name, "deployments": len(controller.pools)})

    async def spec(request: Request) -> Response:
        return JSONResponse(openapi.spec(controller.state.name, limits))

    async def control(request: Request) -> Response:
        if not controller.keys.check(request.headers.get("authorization")):
            return error(401, "unauthorized", "missing or wrong key: send 'Authorization: Bearer <key>'")
        try:
            status, payload, headers = await controller.handle(
                request.method, request.path_params.get("rest", ""), await request.body(), request.headers
            )
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
    )


def main(argv: list[str] | None = None) -> None:
    """``python -m nerops.serving.endpoint --name NAME --port PORT``: run an endpoint in the foreground."""
    import argparse

    import uvicorn

    from nerops.lifecycle import open_governance
    from nerops.settings import get_settings
    from nerops.telemetry import local_telemetry

    parser = argparse.ArgumentParser(description="Run a local online endpoint.")
    parser.add_argument("--name", default="resume-ner")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8910)
    parser.add_argument("--export-interval", type=float, default=5.0, help="Telemetry export interval (s).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    settings = get_settings()
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
    )
    telemetry = local_telemetry(
        settings.state / "telemetry" / "telemetry.db", endpoint=args.name, export_interval_s=args.export_interval
    )
    app = build_app(controller, telemetry)
    Path(folder / "endpoint.url").write_text(f"http://{args.host}:{args.port}\n")
    uvicorn.run(
        app, host=args.host, port=args.port, log_level="warning", access_log=False, http="httptools", loop="uvloop"
    )
    lock.close()


if __name__ == "__main__":
    main()
