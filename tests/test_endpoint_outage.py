"""The endpoint without its registry: a real ``mlflow server`` that goes away; verified local copies serve.

With the registry up, a changed copy is downloaded again; with it down, an intact copy serves (after a
restart too) and a changed one is refused with the reason. The ledger, which is local, says what the
bytes must hash to.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from nerops.registry.lineage import artifact_sha256
from nerops.serving.client import LocalEndpoint
from nerops.settings import Settings
from tests.conftest import approve_synthetic
from tests.test_registry_outage import MlflowServer


def _serves(ep: LocalEndpoint) -> int:
    return ep.client().score("Ann Lee  ann@example.com").status_code


def test_the_endpoint_starts_from_verified_copies_while_the_registry_is_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_model: Path, synthetic_data, synthetic_personal
):
    from nerops.data import read_corpus
    from nerops.lifecycle import open_governance

    server = MlflowServer(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path / "server-artifacts")
    server.start()
    state = tmp_path / "state"
    monkeypatch.setenv("NEROPS_STATE_DIR", str(state))
    monkeypatch.setenv("NEROPS_MLFLOW_TRACKING_URI", server.url)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast while it is down
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    settings = Settings(state_dir=state)
    try:
        gov = open_governance(actor="tester@test")
        version = approve_synthetic(gov, tiny_model, read_corpus(synthetic_data[1]), synthetic_personal)

        ep = LocalEndpoint.start(settings, "outage-ep", export_interval=0.5)
        try:
            ep.client().create_deployment("blue", version)
            ep.client().set_traffic({"blue": 100})
            assert _serves(ep) == 200
        finally:
            ep.stop()
        copy = state / "endpoints" / "outage-ep" / "models" / f"v{version}"
        recorded = gov.registration(version)["artifact_sha256"]
        assert artifact_sha256(copy) == recorded

        (copy / "model.json").write_text((copy / "model.json").read_text() + " ")  # changed, registry up
        ep = LocalEndpoint.start(settings, "outage-ep", export_interval=0.5)
        try:
            assert _serves(ep) == 200
            assert artifact_sha256(copy) == recorded, "the changed copy was downloaded again"
        finally:
            ep.stop()

        server.stop()
        ep = LocalEndpoint.start(settings, "outage-ep", export_interval=0.5)
        try:
            assert ep.client().read().state["down"] == {}
            assert _serves(ep) == 200, "an intact copy serves while the registry is down"
        finally:
            ep.stop()

        (copy / "model.json").write_text((copy / "model.json").read_text() + " ")  # changed, registry down
        ep = LocalEndpoint.start(settings, "outage-ep", export_interval=0.5)
        try:
            down = ep.client().read().state["down"]
            assert "the local copy is changed since it was verified and the registry is unreachable" in down["blue"]
            answer = ep.client().score("Ann Lee")
            assert (answer.status_code, answer.json()["error"]["code"]) == (503, "deployment_down")
        finally:
            ep.stop()
    finally:
        server.stop()
