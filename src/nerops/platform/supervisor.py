"""The local platform's supervisor: one process that starts the platform's services, restarts the ones that crash,
and stops them all -- with every process they started -- when told to.

    server    prefect server start on 127.0.0.1 (its database in the state folder's prefect/ home)
    setup     once, after the server answers: work pool, prefect deploy --all, concurrency limits, automations
    endpoint  nerops endpoint serve (the local online endpoint)
    worker    prefect worker start --pool local (flow-run heartbeats every 30 s, for crash detection)
    webhook   nerops webhook serve (the GitHub webhook receiver)

The supervisor is a child subreaper (``PR_SET_CHILD_SUBREAPER``): a process one of them started and left behind
(a flow run whose worker was killed) becomes its child, so stopping the platform stops it too. Each service runs in
its own session with ``PR_SET_PDEATHSIG``, so a ``kill -9`` of the supervisor takes its services down with it, and
the state file (``<state>/platform/platform.json``) lists every pid with its start time, so ``up`` after a crash
stops what is left before starting again. A service that exits while the platform is up is started again, after
1 s, then twice as long each time up to 30 s (the count is in ``nerops platform status``).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

PR_SET_PDEATHSIG, PR_SET_CHILD_SUBREAPER = 1, 36
STATE_FILE = "platform.json"
STOP_GRACE_S = 10.0
HEALTH_TIMEOUT_S = 120.0
BACKOFF_MAX_S = 30.0


def platform_dir(state: Path) -> Path:
    folder = state / "platform"
    (folder / "logs").mkdir(parents=True, exist_ok=True)
    return folder


def _prctl(option: int, value: int) -> None:
    with contextlib.suppress(Exception):  # not Linux: no subreaper, no death signal (down still stops by pid)
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(option, value, 0, 0, 0)


def _child_setup() -> None:  # runs in the child between fork and exec
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # a worker started from a non-interactive shell ignores it
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def process_record(pid: int) -> dict | None:
    """pid and start time (so a reused pid is never mistaken for ours), or None when it is gone."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return {"pid": pid, "created": proc.create_time()}
    except psutil.Error:
        return None


def alive(record: dict | None) -> bool:
    """Whether the process of a record still runs (same pid, same start time)."""
    if not record:
        return False
    try:
        proc = psutil.Process(int(record["pid"]))
        return proc.status() != psutil.STATUS_ZOMBIE and abs(proc.create_time() - float(record["created"])) < 0.01
    except (psutil.Error, KeyError, TypeError, ValueError):
        return False


def healthy(url: str | None, timeout: float = 2.0) -> bool:
    if not url:
        return True
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:  # noqa: S310 (our own 127.0.0.1 URLs)
            return 200 <= answer.status < 300
    except Exception:
        return False


@dataclass
class Service:
    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    url: str = ""  # where it listens (shown)
    health: str = ""  # what answers 2xx when it is up
    proc: subprocess.Popen | None = None
    restarts: int = 0
    next_start: float = 0.0
    backoff: float = 1.0
    last_exit: int | None = None
    started_at: float = 0.0
    created: float | None = None  # the process's start time, as psutil tells it (with the pid, its identity)

    def start(self) -> None:
        self.started_at, self.next_start = time.monotonic(), 0.0
        with open(self.log, "ab") as log:
            log.write(f"\n--- {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} starting {self.name}\n".encode())
            self.proc = subprocess.Popen(
                self.args,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_child_setup,  # noqa: PLW1509 (the supervisor has no other threads)
            )
        self.created = (process_record(self.proc.pid) or {}).get("created")

    def record(self) -> dict:
        pid = self.proc.pid if self.proc else None
        return {
            "pid": pid,
            "created": self.created,
            "running": bool(self.proc and self.proc.poll() is None),
            "url": self.url,
            "health": self.health,
            "log": str(self.log),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }


@dataclass
class Ports:
    prefect: int = 4200
    endpoint: int = 8910
    webhook: int = 8470


def webhook_secret(folder: Path) -> tuple[str, str]:
    """The receiver's secret: NEROPS_GITHUB_WEBHOOK_SECRET, else one generated once into the platform folder."""
    if os.environ.get("NEROPS_GITHUB_WEBHOOK_SECRET"):
        return os.environ["NEROPS_GITHUB_WEBHOOK_SECRET"], "NEROPS_GITHUB_WEBHOOK_SECRET"
    from nerops.serving.credentials import generated_secret

    file = folder / "github-webhook-secret"
    return generated_secret(file), str(file)


class Supervisor:
    def __init__(self, state: Path, project: Path, ports: Ports, endpoint: str) -> None:
        self.state, self.project, self.ports, self.endpoint = state, project, ports, endpoint
        self.folder = platform_dir(state)
        self.file = self.folder / STATE_FILE
        self.phase, self.message = "starting", ""
        self.stopping = False
        self.started = time.time()
        self.descendants: dict[int, dict] = {}
        self.me = process_record(os.getpid())
        self.written = ""
        python = sys.executable
        api = f"http://127.0.0.1:{ports.prefect}/api"
        self.api = api
        base = {
            **os.environ,
            "NEROPS_STATE_DIR": str(state),
            "PREFECT_HOME": os.environ.get("PREFECT_HOME") or str(state / "prefect"),
            "PREFECT_API_URL": api,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "NEROPS_PROJECT_DIR": str(project),
            "PYTHONUNBUFFERED": "1",
        }
        secret, self.secret_from = webhook_secret(self.folder)
        logs = self.folder / "logs"
        self.services = [
            Service(
                "server",
                [python, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(ports.prefect)]
                + ["--analytics-off"],
                {**base, "PREFECT_UI_API_URL": api},
                logs / "server.log",
                url=f"http://127.0.0.1:{ports.prefect}",
                health=f"{api}/health",
            ),
            Service(
                "endpoint",
                [python, "-m", "nerops.cli", "endpoint", "serve", "--name", endpoint, "--port", str(ports.endpoint)],
                base,
                logs / "endpoint.log",
                url=f"http://127.0.0.1:{ports.endpoint}",
                health=f"http://127.0.0.1:{ports.endpoint}/health",
            ),
            Service(
                "worker",
                [python, "-m", "prefect", "worker", "start", "--pool", "local", "--type", "process"]
                + ["--name", f"nerops-{os.uname().nodename}"[:60]],
                {**base, "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30"},
                logs / "worker.log",
            ),
            Service(
                "webhook",
                [python, "-m", "nerops.cli", "webhook", "serve", "--host", "127.0.0.1", "--port", str(ports.webhook)],
                {**base, "NEROPS_GITHUB_WEBHOOK_SECRET": secret},
                logs / "webhook.log",
                url=f"http://127.0.0.1:{ports.webhook}/github",
                health=f"http://127.0.0.1:{ports.webhook}/health",
            ),
        ]
        self.setup_log = logs / "setup.log"

    # --- the state file --------------------------------------------------------------------------

    def write(self) -> None:
        """The state file, rewritten when something in it changed (the watch loop asks twice a second)."""
        body = {
            "supervisor": self.me,
            "phase": self.phase,
            "message": self.message,
            "started": self.started,
            "api": self.api,
            "project": str(self.project),
            "endpoint": self.endpoint,
            "webhook_secret": self.secret_from,
            "logs": str(self.folder / "logs"),
            "services": {s.name: s.record() for s in self.services},
            "descendants": list(self.descendants.values()),
        }
        text = json.dumps(body, indent=2)
        if text == self.written:
            return
        tmp = self.file.with_suffix(".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(self.file)
        self.written = text

    def say(self, text: str) -> None:
        self.message = text
        print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)
        self.write()

    # --- running ---------------------------------------------------------------------------------

    def track(self) -> None:
        """Remember every descendant (pid and start time): a crash of the supervisor leaves the list behind."""
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children(recursive=True):
                if child.pid not in self.descendants and (rec := process_record(child.pid)):
                    self.descendants[child.pid] = rec
        self.descendants = {pid: rec for pid, rec in self.descendants.items() if alive(rec)}
        ours = {s.proc.pid for s in self.services if s.proc}
        with contextlib.suppress(psutil.Error):  # orphans we adopted as subreaper: reap the ones that ended
            for child in psutil.Process().children():
                if child.pid not in ours and child.status() == psutil.STATUS_ZOMBIE:
                    with contextlib.suppress(ChildProcessError):
                        os.waitpid(child.pid, os.WNOHANG)

    def wait_healthy(self, service: Service, timeout: float = HEALTH_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.stopping:
            if service.proc and service.proc.poll() is not None:
                raise RuntimeError(f"{service.name} exited with {service.proc.returncode}: see {service.log}")
            if healthy(service.health):
                return
            time.sleep(0.5)
        if not self.stopping:
            raise RuntimeError(f"{service.name} did not answer {service.health} in {timeout:g} s: see {service.log}")

    def run_setup(self) -> None:
        env = dict(self.services[0].env)
        with open(self.setup_log, "ab") as log:
            done = subprocess.run(
                [sys.executable, "-m", "nerops.platform.setup", "--project", str(self.project)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,  # noqa: PLW1509
                check=False,
            )
        if done.returncode != 0:
            raise RuntimeError(f"the set-up failed (exit {done.returncode}): see {self.setup_log}")

    def bring_up(self) -> None:
        server, *others = self.services
        self.say(f"starting the Prefect server on {server.url}")
        server.start()
        self.wait_healthy(server)
        self.say("set-up: work pool, prefect deploy --all, concurrency limits, automations")
        self.run_setup()
        for service in others:
            if self.stopping:
                return
            self.say(f"starting {service.name}")
            service.start()
        for service in others:
            self.wait_healthy(service)
        self.phase = "up"
        self.say("the platform is up")

    def watch(self) -> None:
        while not self.stopping:
            now = time.monotonic()
            for service in self.services:
                if service.proc is None or self.stopping:
                    continue
                code = service.proc.poll()
                if code is None:
                    if service.backoff > 1.0 and now - service.started_at > 60:
                        service.backoff = 1.0  # up for a minute: the next crash restarts quickly again
                elif service.next_start == 0.0:  # an exit just noticed
                    service.last_exit = code
                    service.next_start = now + service.backoff
                    self.say(f"{service.name} exited ({code}); starting it again in {service.backoff:g} s")
                    service.backoff = min(BACKOFF_MAX_S, service.backoff * 2)
                elif now >= service.next_start:
                    service.restarts += 1
                    self.say(f"restarting {service.name} (restart {service.restarts}; it exited with {code})")
                    service.start()
            self.track()
            self.write()
            time.sleep(0.5)

    def stop_all(self) -> None:
        self.phase = "stopping"
        self.say("stopping")
        self.track()
        for service in reversed(self.services):
            if service.proc and service.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(service.proc.pid, signal.SIGTERM)
        stop_processes(list(self.descendants.values()), grace=STOP_GRACE_S)
        for service in self.services:
            if service.proc:
                with contextlib.suppress(Exception):
                    service.proc.wait(timeout=1)
        self.track()
        self.phase = "down"
        self.say("stopped")

    def run(self) -> int:
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        code = 0
        try:
            self.write()
            self.bring_up()
            self.watch()
        except Exception as exc:
            self.phase = "failed"
            self.say(f"failed: {exc}")
            code = 1
        finally:
            failed = self.phase == "failed"
            self.stop_all()
            if failed:
                self.phase = "failed"
                self.write()
        return code

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.stopping = True


def stop_processes(records: list[dict], *, grace: float = STOP_GRACE_S) -> list[dict]:
    """SIGTERM every process of ``records`` still alive (same pid and start time), SIGKILL what is left after
    ``grace`` seconds; returns the records still alive after that (none, normally)."""
    for rec in records:
        if alive(rec):
            with contextlib.suppress(psutil.Error):
                psutil.Process(int(rec["pid"])).terminate()
    left = _wait_gone(records, grace)
    for rec in left:
        with contextlib.suppress(psutil.Error):
            psutil.Process(int(rec["pid"])).kill()
    return _wait_gone(left, 5.0)


def _wait_gone(records: list[dict], timeout: float) -> list[dict]:
    """The records still alive after ``timeout`` s (a zombie waiting for its parent to reap it counts as gone)."""
    deadline = time.monotonic() + timeout
    left = [rec for rec in records if alive(rec)]
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = [rec for rec in left if alive(rec)]
    return left


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m nerops.platform.supervisor")
    parser.add_argument("--state", type=Path, required=True)
    parser.add_argument("--project", type=Path, required=True)
    parser.add_argument("--endpoint", required=True)
    parser.add_argument("--prefect-port", type=int, default=4200)
    parser.add_argument("--endpoint-port", type=int, default=8910)
    parser.add_argument("--webhook-port", type=int, default=8470)
    args = parser.parse_args(argv)
    ports = Ports(args.prefect_port, args.endpoint_port, args.webhook_port)
    return Supervisor(args.state.resolve(), args.project.resolve(), ports, args.endpoint).run()


if __name__ == "__main__":
    sys.exit(main())
