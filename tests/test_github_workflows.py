"""The GitHub Actions workflows (.github/workflows/): valid, hardened, and in step with the code.

check-jsonschema (GitHub's workflow schema) and zizmor (static security analysis, offline) are dev dependencies:
when one is missing these tests fail and say how to install it; they do not skip.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nerops.data import TEST_ZIP, TRAIN_ZIP
from nerops.settings import Settings
from nerops.triggers.paths import TRAINING_PATHS

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
WORKFLOW_FILES = sorted(WORKFLOWS.glob("*.y*ml"))
EXPECTED = {"test.yml", "train.yml", "deploy.yml", "rollback.yml"}

SHA = re.compile(r"[0-9a-f]{40}")
USES_LINE = re.compile(r"^\s*(?:-\s+)?uses:\s*(?P<ref>\S+)(?P<rest>.*)$")
VERSION_COMMENT = re.compile(r"^\s*#\s*v\d+\.\d+\.\d+\s*$")
ACCEPTED_SEVERITIES = {"Informational", "Low"}  # zizmor's severities below medium


def tool(name: str) -> Path:
    """A dev-dependency executable beside this interpreter; fail (not skip) when it is missing."""
    path = Path(sys.executable).parent / name
    if not path.is_file():
        pytest.fail(
            f"{name} is not installed in {path.parent} (it is a dev dependency): "
            f"run .venv/bin/pip install -c constraints.txt -e '.[dev]'"
        )
    return path


def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def triggers(workflow: dict[str, Any]) -> dict[str, Any]:
    """The ``on:`` mapping (PyYAML reads the bare key ``on`` as the boolean True)."""
    on = workflow.get("on", workflow.get(True))
    assert isinstance(on, dict), f"'on' should be a mapping, got {on!r}"
    return on


def steps(workflow: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(job_id, step) for job_id, job in workflow["jobs"].items() for step in job.get("steps", [])]


def uses_azure_login(job: dict[str, Any]) -> bool:
    return any(str(step.get("uses", "")).lower().startswith("azure/login@") for step in job.get("steps", []))


def workflow(name: str) -> dict[str, Any]:
    return load(WORKFLOWS / name)


def describe(finding: dict[str, Any]) -> str:
    """One line for a zizmor JSON finding: audit, severity, what, where."""
    try:
        where = finding["locations"][0]
        key = where["symbolic"]["key"]
        path = key.get("Local", {}).get("verbatim_path", key) if isinstance(key, dict) else key
        place = f"{path}:{where['concrete']['location']['start_point']['row'] + 1}"
    except (KeyError, IndexError, TypeError):
        place = json.dumps(finding.get("locations"))[:300]
    return f"{finding.get('ident')} ({finding['determinations']['severity']}): {finding.get('desc')} at {place}"


def test_the_expected_workflows_exist() -> None:
    assert EXPECTED.issubset(path.name for path in WORKFLOW_FILES)


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_workflow_passes_the_github_workflow_schema(path: Path) -> None:
    result = subprocess.run(
        [str(tool("check-jsonschema")), "--builtin-schema", "vendor.github-workflows", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_zizmor_offline_finds_nothing_of_medium_severity_or_above() -> None:
    result = subprocess.run(
        [str(tool("zizmor")), "--offline", "--format", "json", "--no-exit-codes", "--no-progress", ".github/workflows"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    findings = json.loads(result.stdout)
    serious = [f for f in findings if f["determinations"]["severity"] not in ACCEPTED_SEVERITIES]
    summary = [describe(finding) for finding in serious]
    assert not serious, "zizmor findings of medium severity or above:\n" + "\n".join(summary)


def test_train_workflow_paths_are_the_training_paths() -> None:
    on = triggers(workflow("train.yml"))
    assert on["push"]["paths"] == list(TRAINING_PATHS)
    assert on["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in on


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_every_action_is_pinned_by_commit_sha_with_its_version(path: Path) -> None:
    refs = [step["uses"] for _, step in steps(load(path)) if "uses" in step]
    for ref in refs:
        action, _, pin = ref.partition("@")
        assert SHA.fullmatch(pin), f"{path.name}: {ref} is not pinned to a full commit sha"
        assert action.count("/") >= 1 and not action.startswith(("./", "docker://")), ref
    lines = [USES_LINE.match(line) for line in path.read_text().splitlines()]
    found = [m for m in lines if m]
    assert sorted(m["ref"] for m in found) == sorted(refs)
    for m in found:
        assert VERSION_COMMENT.match(m["rest"]), f"{path.name}: {m['ref']} lacks its '# vX.Y.Z' comment"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_least_privilege_permissions(path: Path) -> None:
    wf = load(path)
    assert "permissions" in wf, f"{path.name} has no top-level permissions"
    assert wf["permissions"] in ({}, {"contents": "read"}), wf["permissions"]
    for job_id, job in wf["jobs"].items():
        assert "permissions" in job, f"{path.name}: job {job_id} has no permissions"
        granted = dict(job["permissions"])
        expected = {"contents": "read"}
        if uses_azure_login(job):
            expected["id-token"] = "write"
        assert granted == expected, f"{path.name}: job {job_id} is granted {granted}, expected {expected}"


@pytest.mark.parametrize("path", WORKFLOW_FILES, ids=lambda p: p.name)
def test_hardening(path: Path) -> None:
    wf = load(path)
    for job_id, job in wf["jobs"].items():
        assert isinstance(job.get("timeout-minutes"), int), f"{path.name}: job {job_id} has no timeout"
    for job_id, step in steps(wf):
        if str(step.get("uses", "")).startswith("actions/checkout@"):
            assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}: {job_id} keeps the token"
        # no template injection: expressions reach scripts through env:, never inline
        assert "${{" not in step.get("run", ""), f"{path.name}: {job_id} step {step.get('name')} expands inline"


def test_azure_login_uses_openid_connect_only() -> None:
    logins = [
        (name, step)
        for name in ("train.yml", "deploy.yml", "rollback.yml")
        for _, step in steps(workflow(name))
        if str(step.get("uses", "")).startswith("azure/login@")
    ]
    assert len(logins) == 3
    for name, step in logins:
        assert set(step["with"]) == {"client-id", "tenant-id", "subscription-id"}, name  # no creds, no secret
        for value in step["with"].values():
            assert value.startswith("${{ vars.AZURE_"), (name, value)


@pytest.mark.parametrize(("name", "command"), [
    ("train.yml", 'nerops trigger retrain --commit "$GITHUB_SHA"'),
    ("deploy.yml", 'nerops trigger rollout --version "$VERSION"'),
    ("rollback.yml", 'nerops trigger rollback --rollout "$ROLLOUT"'),
    ("rollback.yml", 'nerops trigger rollback --to "$TO"'),
])  # fmt: skip
def test_each_backend_job_starts_its_deployment(name: str, command: str) -> None:
    jobs = workflow(name)["jobs"]
    assert sorted(job["if"] for job in jobs.values()) == [
        "vars.NEROPS_BACKEND != 'azure'",
        "vars.NEROPS_BACKEND == 'azure'",
    ]
    for job_id, job in jobs.items():
        scripts = "\n".join(step.get("run", "") for step in job["steps"])
        assert command in scripts, f"{name}: job {job_id} does not run {command}"
        env = {k: v for step in job["steps"] for k, v in step.get("env", {}).items()}
        assert env["PREFECT_API_URL"] == "${{ secrets.PREFECT_API_URL }}"
        assert (env.get("NEROPS_BACKEND") == "azure") == uses_azure_login(job) == (job["if"].endswith("== 'azure'"))


def test_deploy_workflow_takes_a_version_and_an_environment() -> None:
    wf = workflow("deploy.yml")
    inputs = triggers(wf)["workflow_dispatch"]["inputs"]
    assert inputs["version"]["required"] is True
    assert inputs["environment"]["type"] == "choice"
    assert inputs["environment"]["options"] == ["staging", "production"]
    for job in wf["jobs"].values():
        assert job["environment"] == "${{ inputs.environment }}"
        validate = job["steps"][0]
        assert validate["env"] == {"VERSION": "${{ inputs.version }}"}
        assert "^([0-9]+|challenger)$" in validate["run"]


def test_rollback_workflow_takes_a_rollout_or_a_target() -> None:
    inputs = triggers(workflow("rollback.yml"))["workflow_dispatch"]["inputs"]
    assert set(inputs) == {"rollout", "to"}
    assert not inputs["rollout"]["required"] and not inputs["to"]["required"]


def test_test_workflow_runs_make_test_with_the_pinned_dataset_and_chromium() -> None:
    wf = workflow("test.yml")
    on = triggers(wf)
    assert "push" in on and "pull_request" in on
    (job,) = wf["jobs"].values()
    by_name = {step.get("name"): step for step in job["steps"]}
    dataset = by_name["dataset (dotin zips, pinned sha256)"]
    assert dataset["env"]["BASE_URL"] == Settings.model_fields["data_base_url"].default
    for pinned in (TRAIN_ZIP, TEST_ZIP):
        assert f'-o {pinned.local_name} "$BASE_URL/{pinned.remote_name}"' in dataset["run"]
        assert f"{pinned.sha256}  {pinned.local_name}" in dataset["run"]
    assert "sha256sum -c" in dataset["run"]
    run = by_name["make test"]
    assert run["run"].startswith("make test")
    assert run["env"]["NEROPS_DATA_DIR"] == dataset["env"]["DATA_DIR"]
    assert "chromium" in by_name["chromium"]["run"]
    setup = next(step for step in job["steps"] if str(step.get("uses", "")).startswith("actions/setup-python@"))
    assert setup["with"]["cache"] == "pip"
