"""``nerops platform up | status | down | setup`` and ``nerops trigger retrain | rollout | rollback``."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import click

from nerops.platform.supervisor import STATE_FILE, alive, healthy, platform_dir, stop_processes
from nerops.settings import get_settings

UP_TIMEOUT_S = 600.0  # prefect deploy --all imports every flow: minutes on a busy 2-core machine


def _read(file: Path) -> dict | None:
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _records(status: dict) -> list[dict]:
    """Every process the state file names: the supervisor, the services, what they started."""
    found = [status.get("supervisor")]
    found += [{"pid": s["pid"], "created": s["created"]} for s in status.get("services", {}).values() if s.get("pid")]
    found += status.get("descendants", [])
    return [r for r in found if r and r.get("pid") and r.get("created")]


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _table(status: dict) -> str:
    rows = [f"platform {status.get('phase')}: {status.get('message', '')}"]
    sup = status.get("supervisor") or {}
    rows.append(f"  {'supervisor':<10} pid {sup.get('pid', '-'):<8} {'running' if alive(sup) else 'gone':<8}")
    for name, svc in status.get("services", {}).items():
        running = alive({"pid": svc.get("pid"), "created": svc.get("created")}) if svc.get("pid") else False
        state = ("healthy" if healthy(svc.get("health")) else "starting") if running else "stopped"
        restarts = f"restarts {svc.get('restarts', 0)}"
        rows.append(
            f"  {name:<10} pid {svc.get('pid') or '-'!s:<8} {state:<8} {svc.get('url') or '-':<34} {restarts:<11} "
            f"log {svc.get('log')}"
        )
    rows.append(f"  Prefect API {status.get('api')} (UI: {status.get('api', '').removesuffix('/api')})")
    rows.append(f"  webhook secret: {status.get('webhook_secret')}   logs: {status.get('logs', '')}")
    return "\n".join(rows)


@click.group()
def platform() -> None:
    """The local platform as real processes: Prefect server, worker, endpoint, webhook receiver."""


@platform.command("up")
@click.option("--prefect-port", type=int, default=lambda: int(os.environ.get("NEROPS_PREFECT_PORT", 4200)))
@click.option("--endpoint-port", type=int, default=lambda: int(os.environ.get("NEROPS_ENDPOINT_PORT", 8910)))
@click.option("--webhook-port", type=int, default=lambda: int(os.environ.get("NEROPS_WEBHOOK_PORT", 8470)))
@click.option("--timeout", type=float, default=UP_TIMEOUT_S, show_default=True, help="Seconds to wait for it.")
def platform_up(prefect_port: int, endpoint_port: int, webhook_port: int, timeout: float) -> None:
    """Start the platform in the background (a supervisor restarts what crashes) and wait until it is up."""
    from nerops.source import project_dir

    settings = get_settings()
    folder = platform_dir(settings.state)
    file = folder / STATE_FILE
    status = _read(file)
    if status and alive(status.get("supervisor")) and status.get("phase") in ("starting", "up"):
        click.echo(_table(status))
        click.echo("already up (nerops platform down stops it)")
        return
    if status:  # a platform that crashed or was killed: stop what it left, then start cleanly
        left = stop_processes(_records(status), grace=5)
        click.echo(f"cleaned up after the last platform ({status.get('phase')}): {len(left)} processes left")
        file.unlink(missing_ok=True)
    wanted = {"prefect": prefect_port, "endpoint": endpoint_port, "webhook": webhook_port}
    busy = [f"{what} {port}" for what, port in wanted.items() if not _port_free(port)]
    if busy:
        raise click.ClickException(f"ports in use on 127.0.0.1: {', '.join(busy)} (choose others with --*-port)")
    log = folder / "logs" / "supervisor.log"
    args = [sys.executable, "-m", "nerops.platform.supervisor", "--state", str(settings.state)]
    args += ["--project", str(project_dir()), "--endpoint", settings.endpoint_of()]
    args += ["--prefect-port", str(prefect_port), "--endpoint-port", str(endpoint_port)]
    args += ["--webhook-port", str(webhook_port)]
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    click.echo(f"supervisor pid {proc.pid}, log {log}", err=True)
    deadline, said = time.monotonic() + timeout, ""
    while time.monotonic() < deadline:
        status = _read(file) or {}
        if status.get("message") and status["message"] != said:
            said = status["message"]
            click.echo(f"  {said}", err=True)
        if status.get("phase") == "up":
            click.echo(_table(status))
            return
        if proc.poll() is not None or status.get("phase") in ("failed", "down"):
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
            raise click.ClickException(f"the platform did not come up: {status.get('message')}\n{tail}")
        time.sleep(0.5)
    proc.terminate()
    raise click.ClickException(f"the platform was not up after {timeout:g} s (stopping it): see {log}")


@platform.command("status")
@click.option("--json", "as_json", is_flag=True, help="The state file as it is.")
def platform_status(as_json: bool) -> None:
    """Each process of the platform: pid, running or not, where it listens and logs, restarts."""
    status = _read(platform_dir(get_settings().state) / STATE_FILE)
    if status is None:
        raise click.ClickException("the platform is not up here (nerops platform up starts it)")
    click.echo(json.dumps(status, indent=2) if as_json else _table(status))
    if not alive(status.get("supervisor")) or status.get("phase") != "up":
        sys.exit(1)


@platform.command("down")
@click.option("--timeout", type=float, default=60.0, show_default=True)
def platform_down(timeout: float) -> None:
    """Stop every process of the platform (checked by pid: none is left)."""
    file = platform_dir(get_settings().state) / STATE_FILE
    status = _read(file)
    if status is None:
        click.echo("the platform is not up here: nothing to stop")
        return
    records = _records(status)
    sup = status.get("supervisor")
    if alive(sup):
        os.kill(int(sup["pid"]), 15)
        deadline = time.monotonic() + timeout
        while alive(sup) and time.monotonic() < deadline:
            time.sleep(0.2)
        records = _records(_read(file) or status) + records  # it may have started more since
    left = stop_processes(records, grace=5)
    if left:
        raise click.ClickException(f"still running after down: pids {[r['pid'] for r in left]}")
    file.unlink(missing_ok=True)
    pids = sorted({r["pid"] for r in records})
    click.echo(f"platform down: {len(pids)} processes stopped ({', '.join(map(str, pids))}); none left")


@platform.command("setup")
@click.option("--no-deploy", is_flag=True, help="Skip prefect deploy --all.")
def platform_setup(no_deploy: bool) -> None:
    """Set up the Prefect server of PREFECT_API_URL: work pool, deployments, concurrency limits, automations."""
    from nerops.platform.setup import set_up
    from nerops.source import project_dir

    set_up(project_dir(), deploy_flows=not no_deploy, say=click.echo)


@click.group()
def trigger() -> None:
    """Start runs of the deployments on the Prefect server of PREFECT_API_URL (what the GitHub workflows call)."""


def _started(run) -> None:
    from prefect.settings import get_current_settings

    ui = (get_current_settings().ui_url or "").rstrip("/")
    click.echo(json.dumps({"flow_run": str(run.id), "name": run.name, "url": f"{ui}/runs/flow-run/{run.id}"}))


@trigger.command("retrain")
@click.option("--commit", required=True, help="The commit to train (40 hex digits).")
@click.option("--reason", default="training workflow", show_default=True)
def trigger_retrain(commit: str, reason: str) -> None:
    """One retrain-model run of the commit (the same run as the webhook's, if it asked first)."""
    from nerops.params import RetrainRequest
    from nerops.triggers.start import start_retrain

    RetrainRequest(commit=commit, reason=reason)  # the flow's own validation, before anything is created
    _started(start_retrain(commit, reason))


@trigger.command("rollout")
@click.option("--version", default="challenger", show_default=True)
@click.option("--approval", is_flag=True, help="With its approval step on.")
@click.option("--reason", default="deploy workflow", show_default=True)
def trigger_rollout(version: str, approval: bool, reason: str) -> None:
    """A progressive-rollout run of a version."""
    from nerops.params import RolloutRequest
    from nerops.triggers.start import ROLLOUT, start

    request = RolloutRequest(version=version, approval=approval, reason=reason)
    _started(start(ROLLOUT, {"request": request.model_dump(exclude_defaults=True)}))


@trigger.command("rollback")
@click.option("--rollout", default=None, help="A rollout id: back to its stable state.")
@click.option("--to", default=None, help="previous, or a version.")
@click.option("--reason", default="rollback workflow", show_default=True)
def trigger_rollback(rollout: str | None, to: str | None, reason: str) -> None:
    """A rollback-model run."""
    from nerops.params import RollbackRequest
    from nerops.triggers.start import ROLLBACK, start

    if bool(rollout) == bool(to):
        raise click.UsageError("give --rollout ID or --to previous|VERSION")
    request = RollbackRequest(rollout=rollout, to=to, reason=reason)
    _started(start(ROLLBACK, {"request": request.model_dump(exclude_none=True)}))
