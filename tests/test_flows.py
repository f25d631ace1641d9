"""The retrain-model and gate-model flows under one Prefect test harness, on the real zips."""

from __future__ import annotations

import asyncio

import pytest

from tests.conftest import SHARED_DATA, needs_real_data

pytestmark = needs_real_data


@pytest.fixture(scope="module")
def flow_state(tmp_path_factory: pytest.TempPathFactory, prefect_harness):
    """One state folder for the module: the flows run one after the other on the same registry."""
    state = tmp_path_factory.mktemp("flow-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEROPS_STATE_DIR", str(state))
    mp.setenv("NEROPS_DATA_DIR", str(SHARED_DATA))
    yield state
    mp.undo()


@pytest.fixture(autouse=True)
def _module_state(flow_state, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEROPS_STATE_DIR", str(flow_state))
    monkeypatch.setenv("NEROPS_DATA_DIR", str(SHARED_DATA))


def artifacts(key: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    async def read():
        async with get_client() as client:
            return await client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])))

    return asyncio.run(read())


def test_retrain_promotes_a_first_model_then_rejects_a_weak_one():
    from flows.retrain_model import retrain_model
    from nerops.lifecycle import open_governance
    from nerops.params import RetrainRequest

    first = retrain_model(RetrainRequest(config="quick", reason="test: first"))
    assert first["version"] == "1" and first["passed"] and first["promoted"]
    assert first["test_micro_f1"] >= 0.40

    weak = retrain_model(RetrainRequest(config="quick", train_fraction=0.1, reason="test: weak"))
    assert weak["version"] == "2" and not weak["passed"] and not weak["promoted"]
    assert any("lower bound not above" in reason for reason in weak["reasons"])

    gov = open_governance()
    assert gov.registry.alias_version("champion") == "1"
    assert [v.stage for v in gov.registry.list_versions()] == ["prod", "candidate"]
    assert [e.kind for e in gov.ledger.entries()] == [
        *("training", "registration", "gate", "promotion"),
        *("training", "registration", "gate"),
    ]
    assert gov.verify().ok

    (markdown,) = artifacts("gate-v2")
    assert "# Gate: v2 FAILED" in markdown.data
    assert "| non_inferiority | **FAIL** |" in markdown.data
    assert "| version | v2 | v1 |" in markdown.data
    (table,) = artifacts("gate-v2-labels")
    rows = table.data if isinstance(table.data, list) else __import__("json").loads(table.data)
    assert [row["label"] for row in rows][:2] == ["Name", "Email Address"] and len(rows) == 12
    assert all(row["champion_f1"] is not None for row in rows)
    (first_md,) = artifacts("gate-v1")
    assert "PASSED" in first_md.data and "(none yet)" in first_md.data


def test_gate_model_flow_regates_against_the_current_champion():
    from flows.gate_model import gate_model
    from nerops.params import GateRequest

    result = gate_model(GateRequest(version="2"))
    assert result == {"version": "2", "passed": False, "promoted": False}
    result = gate_model(GateRequest(version="champion"))
    assert result["version"] == "1" and result["passed"]  # against no one but the thresholds: it is the champion
