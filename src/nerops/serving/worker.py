"""One worker process of a deployment: loads a verified model folder, answers ``/score`` and ``/health``.

Started by the endpoint (``python -m nerops.serving.worker --uds PATH``) with its identity in
environment variables, as an Azure ML deployment's scoring script learns it:
``NEROPS_MODEL_DIR``, ``NEROPS_DEPLOYMENT``, ``NEROPS_MODEL_VERSION``. It listens on a Unix
socket that only the endpoint talks to. Scoring answers carry a header ``x-nerops-signals``
(counts only, never text) that the endpoint turns into model-signal telemetry and strips.

Predictions run one at a time in a thread, so ``/health`` is answered while one runs. A prediction
that raises is answered 500 (``model_error``, the exception's type only). Once its model is loaded
and warmed up the worker sets ``NEROPS_SERVING_WORKER=1`` in its own process: the trigger of a
fault model's serving-only fault (:mod:`nerops.model.faults`), which changes nothing in a normal model. The
worker dies with the endpoint: it exits when the pipe named by ``NEROPS_PARENT_FD`` reaches end
of file (the endpoint holds its only write end), and on Linux also asks the kernel for SIGKILL
when its parent dies.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import threading

from nerops.serving.scoring import Limits, ScoringError, parse_request, score

SIGNALS_HEADER = b"x-nerops-signals"


class WorkerApp:
    """A bare ASGI app: the scoring path is short and runs once per request."""

    def __init__(self, predictor, *, deployment: str, model_version: str, limits: Limits = Limits()) -> None:
        self.predictor = predictor
        self.deployment = deployment
        self.model_version = model_version
        self.limits = limits
        self._one_at_a_time = asyncio.Lock()

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        path, method = scope["path"], scope["method"]
        if path == "/health":
            await _send_json(
                send, 200, {"status": "ready", "deployment": self.deployment, "model_version": self.model_version}
            )
            return
        if path != "/score":
            await _send_json(send, 404, {"error": {"code": "not_found", "message": f"no route {path}"}})
            return
        if method != "POST":
            await _send_json(send, 405, {"error": {"code": "method_not_allowed", "message": "use POST"}})
            return
        body = await _read_body(receive)
        headers = dict(scope["headers"])
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        try:
            texts, batch = parse_request(body, content_type, self.limits)
            async with self._one_at_a_time:
                scored = await asyncio.to_thread(
                    score, texts, batch, self.predictor, model_version=self.model_version, deployment=self.deployment
                )
        except ScoringError as exc:
            await _send_json(send, exc.status, exc.body())
            return
        except Exception as exc:  # the model failed on this input: a 500 that names the error's type, never the text
            print(f"worker: the model failed on a request ({type(exc).__name__})", file=sys.stderr, flush=True)
            message = f"the model failed on this input ({type(exc).__name__})"
            await _send_json(send, 500, {"error": {"code": "model_error", "message": message}})
            return
        signals = [[s.input_chars, s.entities, s.entities_per_label] for s in scored.signals]
        await _send_json(send, 200, scored.payload, [(SIGNALS_HEADER, json.dumps(signals).encode())])


async def _read_body(receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _send_json(send, status: int, payload: object, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps(payload, ensure_ascii=False).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


def die_with_parent(fd: int | None) -> None:
    """Exit when the endpoint does: at end of file on ``fd``, and (Linux) by SIGKILL when the parent dies."""
    if sys.platform.startswith("linux"):
        import ctypes

        pr_set_pdeathsig = 1
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if fd is None:
        return

    def watch() -> None:
        while True:
            try:
                data = os.read(fd, 1)
            except OSError:
                data = b""
            if not data:
                os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def main() -> None:
    import uvicorn

    from nerops.model.faults import arm_in_this_process
    from nerops.model.pipeline import Extractor

    parser = argparse.ArgumentParser(description="A nerops deployment worker (started by the endpoint).")
    parser.add_argument("--uds", required=True, help="Unix socket to listen on")
    args = parser.parse_args()
    parent_fd = os.environ.get("NEROPS_PARENT_FD")
    die_with_parent(int(parent_fd) if parent_fd else None)
    extractor = Extractor.load(os.environ["NEROPS_MODEL_DIR"])
    extractor.predict("warm up  Jane Example  jane@example.com")
    arm_in_this_process()  # a fault model's fault acts from here on, in serving only (nerops.model.faults)
    max_body = os.environ.get("NEROPS_MAX_BODY_BYTES", str(Limits.max_body_bytes))
    if not max_body.isdigit():
        raise SystemExit(f"NEROPS_MAX_BODY_BYTES must be a whole number of bytes, not {max_body!r}")
    limits = Limits(max_body_bytes=int(max_body))
    app = WorkerApp(
        extractor,
        deployment=os.environ["NEROPS_DEPLOYMENT"],
        model_version=os.environ["NEROPS_MODEL_VERSION"],
        limits=limits,
    )
    uvicorn.run(
        app, uds=args.uds, log_level="warning", access_log=False, lifespan="on", http="httptools", loop="uvloop"
    )


if __name__ == "__main__":
    main()
