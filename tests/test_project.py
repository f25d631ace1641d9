"""The Prefect project file points at real flows with valid parameters."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_every_deployment_names_a_flow_of_the_same_name_with_valid_parameters():
    from prefect.flows import load_flow_from_entrypoint

    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    names = []
    for deployment in project["deployments"]:
        path, _, function = deployment["entrypoint"].partition(":")
        flow = load_flow_from_entrypoint(f"{ROOT / path}:{function}")
        assert flow.name == deployment["name"]
        flow.validate_parameters(deployment.get("parameters", {}))
        names.append(deployment["name"])
    assert names == [
        *("retrain-model", "gate-model", "progressive-rollout", "rollback-model", "health-sweep", "on-github-event"),
    ]


SAMPLE_EVENTS = {  # the payloads our own emitters send (tasks.triggers.request_rollout, triggers.github)
    "nerops.model.approved": {"model": "resume-ner", "version": "7", "endpoint": "resume-ner", "approval": True,
                              "reason": "automatic rollout after retrain"},
    "nerops.github.retrain-requested": {"delivery": "d-1", "repository": "o/r", "ref": "refs/heads/main",
                                        "commit": "a" * 40, "before": None, "pusher": "octo",
                                        "matched": ["src/nerops/model/config.py"], "files_complete": True,
                                        "reason": "touches the training paths"},
}  # fmt: skip


def _render(value, payload: dict):
    """A trigger's parameter template filled from an event payload, the way Prefect fills a single expression."""
    if isinstance(value, dict):
        return {key: _render(item, payload) for key, item in value.items()}
    prefix = "{{ event.payload."
    if isinstance(value, str) and value.startswith(prefix) and value.endswith(" }}"):
        return payload[value[len(prefix) : -3]]
    return value


def test_every_trigger_fills_parameters_its_flow_accepts_from_the_event_we_send():
    from prefect.flows import load_flow_from_entrypoint

    project = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    triggered = []
    for deployment in project["deployments"]:
        flow = load_flow_from_entrypoint(str(ROOT / deployment["entrypoint"]))
        for trigger in deployment.get("triggers", ()):
            (event,) = trigger["expect"]
            parameters = _render(trigger["parameters"], SAMPLE_EVENTS[event])
            flow.validate_parameters(parameters)
            triggered.append((deployment["name"], event))
    assert triggered == [
        ("progressive-rollout", "nerops.model.approved"),
        ("on-github-event", "nerops.github.retrain-requested"),
    ]
    schedules = {d["name"]: d.get("schedules", []) for d in project["deployments"]}
    assert schedules["health-sweep"] == [{"interval": 300, "active": True}]


def test_the_set_up_creates_valid_automations_and_sets_the_crash_window():
    import pytest
    from prefect.events.schemas.automations import AutomationCore
    from pydantic import ValidationError

    from nerops.platform.setup import AUTOMATIONS, ZOMBIE_AUTOMATION, load_automation, with_crash_window
    from nerops.settings import Settings

    lookup = {"rollback-model/rollback-model": "0b6bd6a7-5d3c-4a27-a4a5-0d4d0a8a6c11"}.__getitem__
    specs = {spec["name"]: spec for spec in (load_automation(ROOT / "automations" / f, lookup) for f in AUTOMATIONS)}
    for spec in specs.values():
        AutomationCore.model_validate(spec)
    zombie = specs[ZOMBIE_AUTOMATION]
    assert zombie["trigger"]["within"] == 90 and "90 s" in zombie["actions"][0]["message"]
    shorter = AutomationCore.model_validate(with_crash_window(zombie, 60.0))
    assert shorter.trigger.within.total_seconds() == 60
    assert shorter.actions[0].message.startswith("No heartbeat for 60 s") and "60 s" in shorter.description
    assert Settings(platform_crash_after_s=45).platform_crash_after_s == 45
    with pytest.raises(ValidationError, match="greater than or equal to 45"):
        Settings(platform_crash_after_s=30)  # a heartbeat every 30 s: one late beat would crash a live run


def test_the_set_up_says_which_deployment_is_missing_and_how_to_create_it(prefect_harness):
    import pytest

    from nerops.errors import ConfigurationError
    from nerops.platform.setup import apply_sweep_interval

    with pytest.raises(ConfigurationError) as info:
        apply_sweep_interval(120.0, name="health-sweep/never-deployed")
    assert str(info.value) == (
        "no deployment health-sweep/never-deployed on the Prefect server: run the set-up without --no-deploy "
        "(prefect deploy --all)"
    )
