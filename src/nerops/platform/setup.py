"""Set up a Prefect server for the project: the work pool, the deployments (``prefect deploy --all``), the global
concurrency limits, the health-sweep's interval and the automations. Idempotent: run again, it finds what exists
and replaces the automations.

    python -m nerops.platform.setup [--project DIR] [--no-deploy]      (also: ``nerops platform setup``)

Needs ``PREFECT_API_URL`` (a real server: a temporary one would vanish with this process).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import yaml

from nerops.errors import ConfigurationError
from nerops.settings import Settings, get_settings, prefect_api_url

WORK_POOL = "local"
ZOMBIE_AUTOMATION = "nerops-crash-zombie-flows"
SWEEP_DEPLOYMENT = "health-sweep/health-sweep"
AUTOMATIONS = ("crash-zombie-flows.yaml", "rollback-on-crash.yaml")  # rollout-notifications.yaml needs your block
DEPLOY_TIMEOUT_S = 600
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def ensure_work_pool(name: str = WORK_POOL) -> str:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(name)
            return f"work pool {name}: exists"
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=name, type="process"))
            return f"work pool {name}: created (process)"


def endpoints(settings: Settings) -> list[str]:
    return sorted({settings.endpoint_of(), *settings.endpoints.values()})


def ensure_limits(settings: Settings) -> list[str]:
    from tasks.fence import ensure_concurrency_limit

    lines = []
    for name in endpoints(settings):
        ensure_concurrency_limit(f"rollout-{name}")
        lines.append(f"global concurrency limit rollout-{name}: limit 1")
    return lines


def deploy(project: Path) -> str:
    """``prefect deploy --all`` from the project folder (the deployments, their schedules and triggers)."""
    env = {**os.environ, "NEROPS_PROJECT_DIR": str(project)}
    args = [sys.executable, "-m", "prefect", "--no-prompt", "deploy", "--all"]
    done = subprocess.run(args, cwd=project, env=env, capture_output=True, text=True, timeout=DEPLOY_TIMEOUT_S)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-25:])
        raise ConfigurationError(f"prefect deploy --all failed (exit {done.returncode}):\n{tail}")
    return "prefect deploy --all: " + ", ".join(sorted(set(re.findall(r"Deployment '([^']+)'", done.stdout)))) or "ok"


def read_deployment(client, name: str):
    """The deployment ``flow/deployment`` on this server, or a ConfigurationError saying how to create it."""
    from prefect.exceptions import ObjectNotFound

    try:
        return client.read_deployment_by_name(name)
    except ObjectNotFound:
        raise ConfigurationError(
            f"no deployment {name} on the Prefect server: run the set-up without --no-deploy (prefect deploy --all)"
        ) from None


def _resolve_deployments(spec: dict, lookup: Callable[[str], str]) -> dict:
    for action in spec.get("actions", ()):
        target = action.get("deployment_id")
        if isinstance(target, str) and not _UUID.match(target):
            action["deployment_id"] = lookup(target)
    return spec


def load_automation(path: Path, lookup: Callable[[str], str]) -> dict:
    """An automation file as the API takes it, deployment names (``flow/deployment``) resolved to ids."""
    spec = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(spec, dict) or "trigger" not in spec or "actions" not in spec:
        raise ConfigurationError(f"{path}: not an automation (needs name, trigger and actions)")
    return _resolve_deployments(spec, lookup)


def with_crash_window(spec: dict, seconds: float) -> dict:
    """The zombie automation with its window set to ``seconds`` (NEROPS_PLATFORM_CRASH_AFTER_S), its description and
    the crash message saying so where they named the file's own window."""
    was, said = f"{float(spec['trigger']['within']):g} s", f"{seconds:g} s"
    out = {**spec, "trigger": {**spec["trigger"], "within": seconds}}
    out["description"] = str(spec.get("description", "")).replace(was, said)
    out["actions"] = [
        {**a, "message": str(a["message"]).replace(was, said)} if "message" in a else a for a in spec["actions"]
    ]
    return out


def ensure_automations(project: Path, names: tuple[str, ...] = AUTOMATIONS) -> list[str]:
    from prefect.client.orchestration import get_client
    from prefect.events.schemas.automations import AutomationCore

    lines = []
    with get_client(sync_client=True) as client:

        def lookup(name: str) -> str:
            return str(read_deployment(client, name).id)

        for file in names:
            spec = load_automation(project / "automations" / file, lookup)
            if spec.get("name") == ZOMBIE_AUTOMATION:
                spec = with_crash_window(spec, get_settings().platform_crash_after_s)
            automation = AutomationCore.model_validate(spec)
            replaced = client.read_automations_by_name(automation.name)
            for old in replaced:
                client.delete_automation(old.id)
            made = client.create_automation(automation)
            lines.append(f"automation {automation.name}: {'replaced' if replaced else 'created'} ({made})")
    return lines


def apply_sweep_interval(seconds: float, name: str = SWEEP_DEPLOYMENT) -> str:
    """The health-sweep's interval schedule set to ``seconds`` (NEROPS_HEALTH_SWEEP_INTERVAL_S), keeping its anchor,
    slug and active flag; its scheduled runs of the old interval are replaced by the server."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentScheduleUpdate, DeploymentUpdate
    from prefect.client.schemas.schedules import IntervalSchedule

    with get_client(sync_client=True) as client:
        deployment = read_deployment(client, name)
        intervals = [s for s in deployment.schedules if isinstance(s.schedule, IntervalSchedule)]
        if len(intervals) != 1 or len(deployment.schedules) != 1:
            found = [s.schedule for s in deployment.schedules]
            raise ConfigurationError(f"{name}: expected one interval schedule (prefect.yaml), found {found}")
        (current,) = intervals
        was = current.schedule.interval.total_seconds()
        if was == seconds:
            return f"schedule of {name}: every {seconds:g} s"
        schedule = IntervalSchedule(
            interval=timedelta(seconds=seconds), anchor_date=current.schedule.anchor_date,
            timezone=current.schedule.timezone,
        )  # fmt: skip
        update = DeploymentScheduleUpdate(schedule=schedule, active=current.active, slug=current.slug)
        client.update_deployment(deployment.id, DeploymentUpdate(schedules=[update]))
        return f"schedule of {name}: every {seconds:g} s (NEROPS_HEALTH_SWEEP_INTERVAL_S; prefect.yaml says {was:g})"


def set_up(project: Path, *, deploy_flows: bool = True, say: Callable[[str], None] = print) -> None:
    settings = get_settings()
    say(f"setting up the Prefect server at {prefect_api_url('to the Prefect server to set up')} for {project}")
    say(ensure_work_pool())
    if deploy_flows:
        say(deploy(project))
    say(apply_sweep_interval(settings.health_sweep_interval_s))
    for line in ensure_limits(settings):
        say(line)
    for line in ensure_automations(project):
        say(line)


def main(argv: list[str] | None = None) -> int:
    from nerops.source import project_dir

    parser = argparse.ArgumentParser(prog="python -m nerops.platform.setup", description=__doc__)
    parser.add_argument("--project", type=Path, default=project_dir())
    parser.add_argument("--no-deploy", action="store_true", help="Skip prefect deploy --all.")
    args = parser.parse_args(argv)
    try:
        set_up(args.project.resolve(), deploy_flows=not args.no_deploy, say=lambda line: print(line, flush=True))
    except ConfigurationError as exc:
        print(f"set-up failed: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
