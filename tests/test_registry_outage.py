"""A real ``mlflow server`` on 127.0.0.1 that goes away and comes back: governance fails closed, the ledger goes on."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from nerops.data import read_corpus
from nerops.errors import TransientBackendError
from nerops.gate import GatePolicy
from nerops.gating import run_gate
from nerops.governance import Governance, RegistryAnchor
from nerops.ledger import FileAnchor, Ledger
from nerops.registry.mlflow_registry import MlflowRegistry
from nerops.serving.client import free_port

POLICY = GatePolicy(min_micro_f1=0.5, max_latency_ratio=3.0, bootstrap_samples=200)


class MlflowServer:
    """``mlflow server`` in its own session, on a free port; stopped with its whole process group."""

    def __init__(self, backend_uri: str, artifacts: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.backend_uri, self.artifacts = backend_uri, artifacts
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        exe = Path(sys.executable).parent / "mlflow"
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.process = subprocess.Popen(
            [str(exe), "server", "--host", "127.0.0.1", "--port", str(self.port), "--workers", "1",
             "--backend-store-uri", self.backend_uri, "--default-artifact-root", self.artifacts.as_uri(),
             "--no-serve-artifacts"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, "mlflow server exited"
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError("mlflow server did not come up in 90 s")

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


@pytest.fixture()
def server(tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while it is down
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    srv = MlflowServer(tracking_uri, tmp_path / "server-artifacts")  # the session's SQLite store: already migrated
    srv.start()
    yield srv
    srv.stop()


def test_registry_outage_fails_closed_while_the_ledger_goes_on(
    server: MlflowServer, tiny_model: Path, reseeded_model: Path, synthetic_data, synthetic_personal, tmp_path: Path
):
    registry = MlflowRegistry(server.url, f"ner-{uuid.uuid4().hex[:8]}", artifact_root=(tmp_path / "art").as_uri())
    ledger = Ledger(tmp_path / "ledger.jsonl", FileAnchor(tmp_path / "head.json"), remote=RegistryAnchor(registry))
    gov = Governance(registry, ledger, actor="tester@test")
    docs = read_corpus(synthetic_data[1])
    versions = []
    for model in (tiny_model, reseeded_model):
        versions.append(
            gov.register(
                model,
                dataset_version="synthetic",
                config_hash="cfg",
                git_commit="abc",
                libraries={},
                params={},
                metrics={},
            ).version  # fmt: skip
        )
    assert run_gate(gov, versions[0], docs, POLICY, test_sha256="0" * 64, personal=synthetic_personal)[0].passed
    gov.approve(versions[0], reason="first")
    gov.set_champion(versions[0], expected=None, reason="first")
    assert registry.alias_version("champion") == versions[0]
    entries_before = len(ledger.entries())

    server.stop()
    with pytest.raises(TransientBackendError, match=f"MLflow registry at {server.url}"):
        registry.alias_version("champion")  # never "no champion"
    with pytest.raises(TransientBackendError, match=f"MLflow registry at {server.url}: read version {versions[1]}"):
        run_gate(gov, versions[1], docs, POLICY, test_sha256="0" * 64, personal=synthetic_personal)  # fails closed
    assert len(ledger.entries()) == entries_before, "no gate decision was recorded"
    change = {"after": {"traffic": {"blue": 100}, "mirror": {}}}
    entry = ledger.append("traffic_change", subject={"endpoint": "resume-ner"}, evidence=change)
    assert entry.seq == entries_before + 1
    down = ledger.verify()
    assert down.ok and [p.kind for p in down.problems] == ["anchor_unreachable"]

    server.start()
    report = gov.verify(catch_up=True)
    text = report.describe()
    assert report.ok, text
    assert f"the registry anchor is behind: it records entry {entries_before}" in text
    assert f"caught up: the registry anchor moved from entry {entries_before} to {entry.seq}" in text
    again = gov.verify(catch_up=True).describe()
    assert "registry anchor at the head" in again and "behind" not in again and "caught up" not in again
