"""A deployment's worker processes: start, route to a free one, watch, restart.

Each worker is its own process on its own Unix socket, so a crash or hang of one deployment
cannot take the endpoint or the other deployments down. Requests go to whichever worker slot is
free first (real load spreading across processes, unlike one uvicorn with several workers). A
supervisor restarts a worker whose process died, and kills and restarts one that stops
answering its health check.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

log = logging.getLogger("nerops.endpoint")

SLOTS_PER_WORKER = 2  # one predicting, one queued: keeps a worker busy while its answer travels


@dataclass
class Worker:
    index: int
    socket: Path
    process: subprocess.Popen | None = None
    client: httpx.AsyncClient | None = None
    generation: int = 0
    restarts: int = 0
    health_failures: int = 0
    started_at: float = 0.0

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None


@dataclass
class Slot:
    worker: Worker
    generation: int


@dataclass
class DeploymentPool:
    name: str
    model_version: str
    model_dir: Path
    instance_count: int
    socket_dir: Path
    request_timeout_s: float = 30.0
    startup_timeout_s: float = 90.0
    health_interval_s: float = 2.0
    health_failures_to_restart: int = 3
    workers: list[Worker] = field(default_factory=list)
    _slots: asyncio.Queue | None = None
    _supervisor: asyncio.Task | None = None
    _stopping: bool = False

    async def start(self) -> None:
        self._slots = asyncio.Queue()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [Worker(i, self.socket_dir / f"{self.name}-{i}.sock") for i in range(self.instance_count)]
        await asyncio.gather(*(self._launch(worker) for worker in self.workers))
        self._supervisor = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for worker in self.workers:
            await self._terminate(worker)

    async def acquire(self, timeout: float) -> Slot:
        """A free slot of a live worker; raises TimeoutError if none frees up in time."""
        assert self._slots is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no worker of {self.name} became free within {timeout:.0f} s")
            slot = await asyncio.wait_for(self._slots.get(), remaining)
            if slot.generation == slot.worker.generation and slot.worker.alive:
                return slot  # stale slots of dead or replaced workers are dropped here

    def release(self, slot: Slot) -> None:
        if self._slots is not None and slot.generation == slot.worker.generation:
            self._slots.put_nowait(slot)

    async def forward(self, slot: Slot, body: bytes, content_type: str) -> httpx.Response:
        assert slot.worker.client is not None
        return await slot.worker.client.post(
            "http://worker/score", content=body, headers={"content-type": content_type}, timeout=self.request_timeout_s
        )

    def status(self) -> dict[str, object]:
        return {
            "name": self.name,
            "model_version": self.model_version,
            "instance_count": self.instance_count,
            "workers": [
                {"index": w.index, "pid": w.pid, "alive": w.alive, "restarts": w.restarts} for w in self.workers
            ],
            "ready": sum(1 for w in self.workers if w.alive),
        }

    # --- process management -------------------------------------------------------------

    async def _launch(self, worker: Worker) -> None:
        worker.socket.unlink(missing_ok=True)
        env = {
            **os.environ,
            "NEROPS_MODEL_DIR": str(self.model_dir),
            "NEROPS_DEPLOYMENT": self.name,
            "NEROPS_MODEL_VERSION": self.model_version,
            "OMP_NUM_THREADS": "1",
        }
        worker.process = subprocess.Popen(
            [sys.executable, "-m", "nerops.serving.worker", "--uds", str(worker.socket)],
            env=env,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        if worker.client is not None:
            await worker.client.aclose()
        worker.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(worker.socket)),
            limits=httpx.Limits(max_connections=SLOTS_PER_WORKER + 2, max_keepalive_connections=SLOTS_PER_WORKER + 2),
        )
        await self._wait_ready(worker)
        worker.generation += 1
        worker.health_failures = 0
        worker.started_at = time.monotonic()
        for _ in range(SLOTS_PER_WORKER):
            self._slots.put_nowait(Slot(worker, worker.generation))
        log.info("deployment %s worker %d ready (pid %s)", self.name, worker.index, worker.pid)

    async def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        while time.monotonic() < deadline:
            if not worker.alive:
                raise RuntimeError(f"deployment {self.name}: worker {worker.index} exited while starting")
            if await self._healthy(worker, timeout=1.0):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"deployment {self.name}: worker {worker.index} not ready in {self.startup_timeout_s} s")

    async def _healthy(self, worker: Worker, timeout: float) -> bool:
        if worker.client is None or not worker.socket.exists():
            return False
        try:
            response = await worker.client.get("http://worker/health", timeout=timeout)
        except httpx.HTTPError:
            return False
        return response.status_code == 200

    async def _terminate(self, worker: Worker) -> None:
        worker.generation += 1  # its slots become stale at once
        if worker.process and worker.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)
        if worker.process:
            await asyncio.to_thread(worker.process.wait)
        if worker.client is not None:
            await worker.client.aclose()
            worker.client = None

    async def _restart(self, worker: Worker, why: str) -> None:
        log.warning("deployment %s worker %d %s: restarting", self.name, worker.index, why)
        await self._terminate(worker)
        worker.restarts += 1
        try:
            await self._launch(worker)
        except (RuntimeError, TimeoutError) as exc:
            log.error("deployment %s worker %d failed to restart: %s", self.name, worker.index, exc)

    async def _supervise(self) -> None:
        last_health = 0.0
        while not self._stopping:
            await asyncio.sleep(0.25)
            for worker in self.workers:
                if not worker.alive:
                    await self._restart(worker, f"exited (code {worker.process.poll() if worker.process else None})")
            if time.monotonic() - last_health < self.health_interval_s:
                continue
            last_health = time.monotonic()
            for worker in self.workers:
                if await self._healthy(worker, timeout=self.health_interval_s):
                    worker.health_failures = 0
                    continue
                worker.health_failures += 1
                if worker.health_failures >= self.health_failures_to_restart:
                    await self._restart(worker, f"failed {worker.health_failures} health checks")
