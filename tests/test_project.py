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
    assert names == ["retrain-model", "gate-model", "progressive-rollout", "rollback-model", "health-sweep"]
