"""Registry, lineage, gate, promotion and repair, against a real MLflow store and a real ledger."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nerops.data import read_corpus
from nerops.errors import LineageError, PromotionError, RegistryError
from nerops.gate import GatePolicy
from nerops.gating import run_gate
from nerops.governance import Governance, RegistryAnchor
from nerops.ledger import Ledger
from nerops.registry import CHAMPION
from nerops.registry.mlflow_registry import MlflowRegistry

POLICY = GatePolicy(min_micro_f1=0.5, max_latency_ratio=2.0, bootstrap_samples=300)


@pytest.fixture()
def gov(tracking_uri: str, tmp_path: Path) -> Governance:
    registry = MlflowRegistry(tracking_uri, f"ner-{uuid.uuid4().hex[:8]}", artifact_root=(tmp_path / "art").as_uri())
    ledger = Ledger(tmp_path / "ledger.jsonl", RegistryAnchor(registry), default_actor="tester@test")
    return Governance(registry, ledger, actor="tester@test")


@pytest.fixture(scope="module")
def test_docs(synthetic_data):
    return read_corpus(synthetic_data[1])


PERSONAL = {}


@pytest.fixture(autouse=True)
def _personal(synthetic_personal) -> None:
    """The training set's personal strings for :func:`gate` (the gate audits the model files for them)."""
    PERSONAL["synthetic"] = synthetic_personal


def register(gov: Governance, model_dir: Path, config_hash: str = "cfg") -> str:
    return gov.register(
        model_dir,
        dataset_version="synthetic",
        config_hash=config_hash,
        git_commit="abc123",
        libraries={"spacy": "3.8"},
        params={"c1": 0.05},
        metrics={"test_micro_f1": 0.9},
    ).version


def gate(gov: Governance, version: str, docs) -> bool:
    result, _ = run_gate(gov, version, docs, POLICY, test_sha256="0" * 64, personal=PERSONAL["synthetic"])
    return result.passed


def test_register_writes_lineage_tags_stage_and_a_ledger_entry(gov: Governance, tiny_model: Path):
    version = register(gov, tiny_model)
    info = gov.registry.get_version(version)
    assert info.stage == "candidate"
    assert set(info.lineage) >= {"dataset_version", "config_hash", "git_commit", "artifact_sha256", "run_id"}
    assert info.lineage["run_id"] == info.run_id
    assert gov.registration(version)["artifact_sha256"] == info.lineage["artifact_sha256"]
    assert gov.verify().ok


def test_first_model_passes_on_thresholds_and_is_promoted(gov: Governance, tiny_model: Path, test_docs):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    gov.promote(version, reason="first model")
    info = gov.registry.get_version(version)
    assert info.stage == "prod" and CHAMPION in info.aliases
    kinds = [entry.kind for entry in gov.ledger.entries()]
    assert kinds == ["registration", "gate", "promotion"]


def test_gate_rejects_the_weak_model_and_accepts_a_reseeded_retrain(
    gov: Governance, tiny_model: Path, weak_model: Path, reseeded_model: Path, test_docs
):
    champion = register(gov, tiny_model)
    assert gate(gov, champion, test_docs)
    gov.promote(champion, reason="first")

    weak = register(gov, weak_model)
    result, details = run_gate(gov, weak, test_docs, POLICY, test_sha256="0" * 64, personal=PERSONAL["synthetic"])
    assert not result.passed
    assert any("lower bound not above the allowed -0.020" in reason for reason in result.reasons)
    assert f"v{weak} FAILED the gate against champion v{champion}" in result.summary()
    assert details["champion"]["version"] == champion
    assert gov.registry.get_version(weak).tags["gate.verdict"] == "fail"
    with pytest.raises(PromotionError, match="failed"):
        gov.promote(weak, reason="try anyway")

    reseeded = register(gov, reseeded_model)
    assert gate(gov, reseeded, test_docs)
    gov.promote(reseeded, reason="retrain")
    assert gov.registry.alias_version(CHAMPION) == reseeded
    assert gov.registry.get_version(weak).stage == "candidate"


def test_promotion_needs_a_current_pass(gov: Governance, tiny_model: Path, reseeded_model: Path, test_docs):
    first = register(gov, tiny_model)
    with pytest.raises(PromotionError, match="never been gated"):
        gov.promote(first, reason="no gate")
    second = register(gov, reseeded_model)
    assert gate(gov, first, test_docs) and gate(gov, second, test_docs)  # both pass with no champion
    gov.promote(first, reason="first")
    with pytest.raises(PromotionError, match="champion is now 1: gate it again"):
        gov.promote(second, reason="stale pass")


@pytest.mark.parametrize("ref", ["/tmp/models/quick", "./model", "models:/ner/1", "runs:/abc/model"])
def test_an_artifact_path_is_refused(gov: Governance, ref: str):
    with pytest.raises(PromotionError, match="registry versions only"):
        gov.promote(ref, reason="path")


def test_unknown_versions_and_aliases_are_clear_errors(gov: Governance):
    with pytest.raises(RegistryError, match="no version 42"):
        gov.promote("42", reason="x")
    with pytest.raises(RegistryError, match="no version or alias 'blue'"):
        gov.resolve("blue")


def test_a_changed_lineage_tag_blocks_loading_and_promotion(gov: Governance, tiny_model: Path, test_docs):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    gov.registry.set_tags(version, {"lineage.dataset_version": "forged"})
    with pytest.raises(LineageError, match="'dataset_version' changed from 'synthetic' to 'forged'"):
        gov.load(version)
    with pytest.raises(PromotionError, match="dataset_version"):
        gov.promote(version, reason="x")


def test_one_changed_artifact_byte_blocks_loading_and_promotion(
    gov: Governance, tiny_model: Path, test_docs, tmp_path: Path
):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    stored = sorted((tmp_path / "art").rglob("model.crfsuite"))
    assert len(stored) == 1
    data = bytearray(stored[0].read_bytes())
    data[len(data) // 2] ^= 0x01
    stored[0].write_bytes(bytes(data))
    with pytest.raises(LineageError, match="model artifacts changed"):
        gov.load(version)
    with pytest.raises(PromotionError, match="model artifacts changed"):
        gov.promote(version, reason="x")


def test_crash_between_registry_and_ledger_is_reported_and_repaired(
    gov: Governance, tiny_model: Path, monkeypatch: pytest.MonkeyPatch
):
    real_append = gov.ledger.append

    def crash_on_registration(kind, **kwargs):
        if kind == "registration":
            raise OSError("disk went away")
        return real_append(kind, **kwargs)

    monkeypatch.setattr(gov.ledger, "append", crash_on_registration)
    with pytest.raises(OSError):
        register(gov, tiny_model)
    monkeypatch.undo()

    report = gov.verify()
    assert not report.ok and report.orphans == ["1"]
    assert "orphan: registry version 1 has no registration entry" in report.describe()
    with pytest.raises(LineageError, match="orphan"):
        gov.load("1")

    actions = gov.reconcile()
    assert actions == ["recorded orphan v1 in the ledger (its artifacts match its lineage tags)"]
    assert gov.verify().ok
    assert gov.reconcile() == []  # repaired once, nothing left


def test_crash_after_the_promotion_entry_is_repaired_from_the_ledger(
    gov: Governance, tiny_model: Path, test_docs, monkeypatch: pytest.MonkeyPatch
):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    monkeypatch.setattr(gov, "_apply_promotion", lambda v: (_ for _ in ()).throw(OSError("registry down")))
    with pytest.raises(OSError):
        gov.promote(version, reason="x")
    monkeypatch.undo()
    report = gov.verify()
    assert not report.ok
    assert f"v{version} is tagged stage=candidate but the ledger says prod" in report.drift
    gov.reconcile()
    assert gov.verify().ok
    assert gov.registry.alias_version(CHAMPION) == version


def test_the_ledger_head_is_anchored_in_the_registry(gov: Governance, tiny_model: Path):
    register(gov, tiny_model)
    head = gov.ledger.head()
    assert gov.registry.read_anchor() == f"{head.seq}:{head.hash}"
    lines = gov.ledger.path.read_text().splitlines()
    gov.ledger.path.write_text("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""))
    report = gov.verify()
    assert not report.ok and "truncated" in report.describe()
