"""A deployment's worker processes: start, route to a free one, watch, restart.

Each worker is its own process on its own Unix socket, so a crash or hang of one deployment
cannot take the endpoint or the other deployments down. Requests go to whichever worker slot is
free first (real load spreading across processes, unlike one uvicorn with several workers). A
supervisor restarts a worker whose process died, and kills and restarts one that stops
answering its health check. A worker that fails to start is tried again with a growing wait;
after :attr:`PoolSettings.start_attempts` failures in a row the deployment is down, with the
reason (the last line the worker wrote). Workers die with the endpoint: each holds the read end
of a pipe whose write end only the endpoint holds, and exits on end of file (any OS), and on
Linux also asks for SIGKILL when its parent dies (which reaches a stopped worker too).

:meth:`DeploymentPool.scale` changes a serving pool's size in place. New workers start as at
creation (retries, readiness) and each takes requests once ready; if one cannot start, the ones
added are stopped and the old ones serve on. A worker that leaves (scaled in, or added by a
scale-up that failed) gets no new request and is stopped once the requests it holds are answered.

A request in flight fails with the exact answer of what happened to its worker:

    the worker stopped answering (timed out, or killed for failed health checks)  504
    the worker exited by itself while answering                                   502
    no live worker slot came free within the wait                                 503

A worker that refuses the connection (it is dying, and never saw the request) is not an answer:
:meth:`DeploymentPool.dispatch` tries the next free slot within the same wait, so that request
too ends in 503 if no live worker frees up.
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
PARENT_FD_VARIABLE = "NEROPS_PARENT_FD"
RESERVED_VARIABLES = frozenset({"NEROPS_MODEL_DIR", "NEROPS_DEPLOYMENT", "NEROPS_MODEL_VERSION", PARENT_FD_VARIABLE})


@dataclass(frozen=True)
class PoolSettings:
    """How long to wait for what; from ``NEROPS_ENDPOINT_*`` settings (:meth:`from_settings`)."""

    request_timeout_s: float = 30.0
    acquire_timeout_s: float = 5.0
    startup_timeout_s: float = 90.0
    health_interval_s: float = 2.0
    health_failures_to_restart: int = 3
    restart_backoff_s: float = 0.5
    restart_backoff_max_s: float = 30.0
    start_attempts: int = 4

    @classmethod
    def from_settings(cls, settings) -> PoolSettings:
        return cls(
            request_timeout_s=settings.endpoint_request_timeout_s,
            acquire_timeout_s=settings.endpoint_acquire_timeout_s,
            health_interval_s=settings.endpoint_health_interval_s,
            restart_backoff_s=settings.endpoint_restart_backoff_s,
            start_attempts=settings.endpoint_start_attempts,
        )


class WorkerStartError(RuntimeError):
    """A worker exited while starting, or was not ready in time."""


class Unanswered(RuntimeError):
    """A request no worker answered: ``status``, ``code`` and ``message`` are the endpoint's error."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class PoolStartError(RuntimeError):
    """A worker failed to start ``start_attempts`` times in a row: the deployment is down."""


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
    parent_pipe: int | None = None
    log_offset: int = 0
    ready: bool = False  # answering its health check: its slots are in the queue
    hung_generation: int = -1  # the generation the supervisor killed for failed health checks
    retired: bool = False  # leaving the pool (scaled down, or a failed scale-up): no new requests, no restarts
    in_flight: int = 0  # requests holding one of its slots
    requests: int = 0  # requests it was given since it joined the pool

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
    settings: PoolSettings = field(default_factory=PoolSettings)
    environment: dict[str, str] = field(default_factory=dict)
    log_dir: Path | None = None
    workers: list[Worker] = field(default_factory=list)
    down_reason: str | None = None
    _slots: asyncio.Queue | None = None
    _supervisor: asyncio.Task | None = None
    _stopping: bool = False
    _joining: list[Worker] = field(default_factory=list)  # starting for a scale-up: not yet in ``workers``

    @property
    def request_timeout_s(self) -> float:
        return self.settings.request_timeout_s

    async def start(self) -> None:
        """Start every worker (each tried again with backoff); on failure nothing is left running."""
        self._slots = asyncio.Queue()
        self.socket_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [Worker(i, self.socket_dir / f"{self.name}-{i}.sock") for i in range(self.instance_count)]
        results = await asyncio.gather(*(self._launch_with_retries(w) for w in self.workers), return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for worker in self.workers:
                await self._terminate(worker)
            raise failures[0] if isinstance(failures[0], PoolStartError) else PoolStartError(str(failures[0]))
        self._supervisor = asyncio.create_task(self._supervise(), name=f"supervise-{self.name}")

    async def stop(self) -> None:
        self._stopping = True
        if self._supervisor:
            self._supervisor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._supervisor
        for worker in [*self.workers, *self._joining]:
            await self._terminate(worker)

    async def scale(self, count: int) -> None:
        """Grow or shrink to ``count`` workers while the others serve; ``instance_count`` changes on success.

        Growing starts the new workers as :meth:`start` does (retries, readiness); each takes requests once
        ready. If one of them cannot start, the ones added are stopped gracefully and :class:`PoolStartError`
        is raised: the pool serves on with its old workers. Shrinking stops the newest workers gracefully.
        """
        if count > len(self.workers):
            await self._grow(count)
        elif count < len(self.workers):
            await self._shrink(count)
        self.instance_count = count

    async def _grow(self, count: int) -> None:
        joining = [Worker(i, self.socket_dir / f"{self.name}-{i}.sock") for i in range(len(self.workers), count)]
        self._joining = joining
        try:
            results = await asyncio.gather(*(self._launch_with_retries(w) for w in joining), return_exceptions=True)
            failures = [r for r in results if isinstance(r, BaseException)]
            if failures or self._stopping:
                await asyncio.gather(*(self._retire(w) for w in joining))
                if failures:
                    first = failures[0]
                    raise first if isinstance(first, PoolStartError) else PoolStartError(str(first))
                return
            self.workers = [*self.workers, *joining]  # a new list: the supervisor watches them from now on
        except asyncio.CancelledError:  # the endpoint stops: nothing started is left running
            for worker in joining:
                worker.retired = True
                await self._terminate(worker)
            raise
        finally:
            self._joining = []

    async def _shrink(self, count: int) -> None:
        leaving = self.workers[count:]
        for worker in leaving:
            worker.retired = True  # before it leaves the list: the supervisor skips it from now on
        self.workers = self.workers[:count]
        try:
            await asyncio.gather(*(self._retire(w) for w in leaving))
        except asyncio.CancelledError:  # the endpoint stops: no more waiting for their requests
            for worker in leaving:
                await self._terminate(worker)
            raise

    async def _retire(self, worker: Worker) -> None:
        """Stop a worker gracefully: no new request goes to it; those it is answering are answered first."""
        worker.retired = True
        deadline = time.monotonic() + self.settings.request_timeout_s + 5.0
        while worker.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        await self._terminate(worker)
        log.info("deployment %s worker %d left the pool", self.name, worker.index)

    async def acquire(self, timeout: float | None = None, deadline: float | None = None) -> Slot:
        """A free slot of a live worker; TimeoutError if none frees up within ``timeout`` (by ``deadline``)."""
        assert self._slots is not None
        timeout = self.settings.acquire_timeout_s if timeout is None else timeout
        deadline = time.monotonic() + timeout if deadline is None else deadline
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                live = sum(1 for w in self.workers if w.ready and w.alive)
                what = "no live worker" if not live else f"none of its {live} live workers"
                raise TimeoutError(f"deployment {self.name!r}: {what} became free within {timeout:g} s")
            try:
                slot = await asyncio.wait_for(self._slots.get(), remaining)
            except TimeoutError:
                continue
            if slot.generation == slot.worker.generation and slot.worker.alive and not slot.worker.retired:
                slot.worker.in_flight += 1
                slot.worker.requests += 1
                return slot  # stale slots of dead, replaced or leaving workers are dropped here

    def release(self, slot: Slot) -> None:
        slot.worker.in_flight -= 1
        if self._slots is not None and slot.generation == slot.worker.generation and not slot.worker.retired:
            self._slots.put_nowait(slot)

    async def forward(self, slot: Slot, body: bytes, content_type: str) -> httpx.Response:
        assert slot.worker.client is not None
        return await slot.worker.client.post(
            "http://worker/score",
            content=body,
            headers={"content-type": content_type},
            timeout=self.settings.request_timeout_s,
        )

    async def dispatch(self, body: bytes, content_type: str) -> httpx.Response:
        """A free live worker's answer to the request; :class:`Unanswered` with the table's status if none.

        A worker that refuses the connection never saw the request (it is dying): the next free
        slot is tried, within the same acquire wait.
        """
        deadline = time.monotonic() + self.settings.acquire_timeout_s
        while True:
            try:
                slot = await self.acquire(deadline=deadline)
            except TimeoutError as exc:
                raise Unanswered(503, "no_live_worker", str(exc)) from exc
            try:
                return await self.forward(slot, body, content_type)
            except httpx.ConnectError:
                worker = slot.worker.index
                log.info("deployment %s: worker %d refused the connection; trying another", self.name, worker)
                await asyncio.sleep(0.05)  # not at once: the supervisor's poll finds the death, a slot frees up
            except Exception as exc:  # timed out, or the worker died: 504 or 502, by what happened to it
                status, code, message = self.failure(slot, exc)
                log.warning("deployment %s: %s (%s)", self.name, code, type(exc).__name__)
                raise Unanswered(status, code, message) from exc
            finally:
                self.release(slot)

    def failure(self, slot: Slot, exc: BaseException) -> tuple[int, str, str]:
        """``(status, code, message)`` for a request whose worker failed it with ``exc``."""
        if isinstance(exc, httpx.TimeoutException):
            return (
                504,
                "deployment_timeout",
                (f"deployment {self.name!r} did not answer within {self.settings.request_timeout_s:g} s"),
            )
        if slot.generation == slot.worker.hung_generation:
            return (
                504,
                "deployment_timeout",
                (f"deployment {self.name!r}: the worker stopped answering and was restarted"),
            )
        return (
            502,
            "deployment_unavailable",
            (f"deployment {self.name!r}: the worker exited while answering ({type(exc).__name__})"),
        )

    def status(self) -> dict[str, object]:
        """The workers serving (and, during a scale-up, those joining: ``joining``) and how many are ready."""
        workers = [(w, False) for w in self.workers] + [(w, True) for w in self._joining]
        return {
            "name": self.name,
            "model_version": self.model_version,
            "instance_count": self.instance_count,
            "workers": [
                {
                    "index": w.index,
                    "pid": w.pid,
                    "alive": w.alive,
                    "ready": w.ready and w.alive,
                    "restarts": w.restarts,
                    "requests": w.requests,
                    "joining": joining,
                }
                for w, joining in workers
            ],
            "ready": sum(1 for w, _ in workers if w.ready and w.alive and not w.retired),
            "down": self.down_reason,
        }

    # --- process management -------------------------------------------------------------

    async def _launch_with_retries(self, worker: Worker) -> None:
        delay = self.settings.restart_backoff_s
        last: Exception | None = None
        for attempt in range(1, self.settings.start_attempts + 1):
            if worker.retired or self._stopping:  # stopped while it was being started: no more attempts
                return
            try:
                await self._launch(worker)
                return
            except WorkerStartError as exc:
                last = exc
                await self._terminate(worker)
                if worker.retired or self._stopping:
                    return
                if attempt < self.settings.start_attempts:
                    log.warning("%s (attempt %d): trying again in %.1f s", exc, attempt, delay)
                    await asyncio.sleep(delay)
                    delay = min(2 * delay, self.settings.restart_backoff_max_s)
        raise PoolStartError(
            f"deployment {self.name!r}: worker {worker.index} failed to start "
            f"{self.settings.start_attempts} times in a row; last: {last}"
        )

    async def _launch(self, worker: Worker) -> None:
        try:
            self._spawn(worker)
        except OSError as exc:  # no process, no descriptor, its log or socket path unusable: tried again
            raise WorkerStartError(
                f"deployment {self.name!r}: worker {worker.index} could not be started: {exc}"
            ) from exc
        if worker.client is not None:
            await worker.client.aclose()
        worker.client = httpx.AsyncClient(
            transport=httpx.AsyncHTTPTransport(uds=str(worker.socket)),
            limits=httpx.Limits(max_connections=SLOTS_PER_WORKER + 2, max_keepalive_connections=SLOTS_PER_WORKER + 2),
        )
        await self._wait_ready(worker)
        if worker.retired or self._stopping:  # stopped while it started: it takes no requests
            await self._terminate(worker)
            return
        worker.ready = True
        worker.generation += 1
        worker.health_failures = 0
        worker.started_at = time.monotonic()
        for _ in range(SLOTS_PER_WORKER):
            self._slots.put_nowait(Slot(worker, worker.generation))
        log.info("deployment %s worker %d ready (pid %s)", self.name, worker.index, worker.pid)

    def _spawn(self, worker: Worker) -> None:
        """The worker's process, with its log as stderr and the read end of its parent pipe."""
        worker.socket.unlink(missing_ok=True)
        log_file, worker.log_offset = self._log(worker)
        with log_file if log_file is not None else contextlib.nullcontext():
            worker.parent_pipe = self._popen(worker, log_file)

    def _popen(self, worker: Worker, log_file) -> int:
        """Start the process; returns the write end of its parent pipe (the worker exits when it closes)."""
        read_end, write_end = os.pipe()
        env = {
            **os.environ,
            **self.environment,
            "NEROPS_MODEL_DIR": str(self.model_dir),
            "NEROPS_DEPLOYMENT": self.name,
            "NEROPS_MODEL_VERSION": self.model_version,
            PARENT_FD_VARIABLE: str(read_end),
            "OMP_NUM_THREADS": "1",
        }
        try:
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "nerops.serving.worker", "--uds", str(worker.socket)],
                env=env,
                stdin=subprocess.DEVNULL,
                stderr=log_file,
                pass_fds=(read_end,),
                start_new_session=True,
            )
        except BaseException:
            os.close(write_end)
            raise
        finally:
            os.close(read_end)
        return write_end

    def _log(self, worker: Worker):
        """The worker's stderr file (appended) and where this start begins in it."""
        if self.log_dir is None:
            return None, 0
        self.log_dir.mkdir(parents=True, exist_ok=True)
        path = self.log_dir / f"{self.name}-{worker.index}.log"
        handle = path.open("ab")
        return handle, handle.tell()

    def _last_words(self, worker: Worker) -> str:
        """The last line the worker wrote since it was started (model and settings errors; no CV text)."""
        if self.log_dir is None:
            return ""
        path = self.log_dir / f"{self.name}-{worker.index}.log"
        with contextlib.suppress(OSError), path.open("rb") as handle:
            handle.seek(worker.log_offset)
            lines = [line.strip() for line in handle.read()[-4000:].decode(errors="replace").splitlines()]
            lines = [line for line in lines if line]
            return lines[-1][:300] if lines else ""
        return ""

    async def _wait_ready(self, worker: Worker) -> None:
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while time.monotonic() < deadline:
            if not worker.alive:
                code = worker.process.poll() if worker.process else None
                words = self._last_words(worker)
                raise WorkerStartError(
                    f"deployment {self.name!r}: worker {worker.index} exited with code {code} while starting"
                    + (f": {words}" if words else "")
                )
            if await self._healthy(worker, timeout=1.0):
                return
            await asyncio.sleep(0.1)
        raise WorkerStartError(
            f"deployment {self.name!r}: worker {worker.index} not ready in {self.settings.startup_timeout_s:g} s"
        )

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
        worker.ready = False
        if worker.process and worker.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.process.pid, signal.SIGKILL)
        if worker.process:
            await asyncio.to_thread(worker.process.wait)
        if worker.parent_pipe is not None:
            os.close(worker.parent_pipe)
            worker.parent_pipe = None
        if worker.client is not None:
            await worker.client.aclose()
            worker.client = None

    async def _restart(self, worker: Worker, why: str) -> None:
        if worker.retired:
            return
        log.warning("deployment %s worker %d %s: restarting", self.name, worker.index, why)
        await self._terminate(worker)
        worker.restarts += 1
        try:
            await self._launch_with_retries(worker)
        except PoolStartError as exc:
            self.down_reason = str(exc)
            log.error("%s: the deployment is down", exc)

    async def _supervise(self) -> None:
        last_health = 0.0
        while not self._stopping and self.down_reason is None:
            await asyncio.sleep(0.25)
            for worker in self.workers:
                if not worker.alive and not worker.retired and self.down_reason is None:
                    await self._restart(worker, f"exited (code {worker.process.poll() if worker.process else None})")
            if time.monotonic() - last_health < self.settings.health_interval_s:
                continue
            last_health = time.monotonic()
            for worker in self.workers:
                if not worker.alive or worker.retired:
                    continue
                if await self._healthy(worker, timeout=self.settings.health_interval_s):
                    worker.health_failures = 0
                    continue
                worker.health_failures += 1
                if worker.health_failures >= self.settings.health_failures_to_restart:
                    worker.hung_generation = worker.generation  # its requests in flight answer 504
                    await self._restart(worker, f"failed {worker.health_failures} health checks")
