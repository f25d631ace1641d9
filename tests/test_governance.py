"""Registry, lineage, gate, approval, champion changes and repair, against a real MLflow store and a real ledger."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from nerops.data import read_corpus
from nerops.errors import ConflictError, LineageError, PromotionError, RegistryError
from nerops.gate import GatePolicy
from nerops.gating import run_gate
from nerops.governance import Governance, RegistryAnchor
from nerops.ledger import Ledger
from nerops.registry import CHALLENGER, CHAMPION
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


def make_champion(gov: Governance, version: str) -> None:
    gov.approve(version, reason="test")
    gov.set_champion(version, expected=gov.state().champion, reason="test")


def test_first_model_passes_on_thresholds_and_is_approved_not_champion(gov: Governance, tiny_model: Path, test_docs):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    gov.approve(version, reason="first model")
    info = gov.registry.get_version(version)
    assert info.stage == "prod" and info.aliases == (CHALLENGER,)
    assert gov.registry.alias_version(CHAMPION) is None and gov.state().champion is None
    assert [entry.kind for entry in gov.ledger.entries()] == ["registration", "gate", "approval"]


def test_a_retried_registration_returns_the_version_already_made(gov: Governance, tiny_model: Path):
    first = register(gov, tiny_model)
    assert register(gov, tiny_model) == first
    assert [v.version for v in gov.registry.list_versions()] == [first]
    assert [e.kind for e in gov.ledger.entries()] == ["registration"]


def test_gate_rejects_the_weak_model_and_accepts_a_reseeded_retrain(
    gov: Governance, tiny_model: Path, weak_model: Path, reseeded_model: Path, test_docs
):
    champion = register(gov, tiny_model)
    assert gate(gov, champion, test_docs)
    make_champion(gov, champion)

    weak = register(gov, weak_model)
    result, details = run_gate(gov, weak, test_docs, POLICY, test_sha256="0" * 64, personal=PERSONAL["synthetic"])
    assert not result.passed
    assert any("lower bound not above the allowed -0.020" in reason for reason in result.reasons)
    assert f"v{weak} FAILED the gate against champion v{champion}" in result.summary()
    assert details["champion"]["version"] == champion
    assert gov.registry.get_version(weak).tags["gate.verdict"] == "fail"
    with pytest.raises(PromotionError, match="failed"):
        gov.approve(weak, reason="try anyway")

    reseeded = register(gov, reseeded_model)
    assert gate(gov, reseeded, test_docs)
    gov.approve(reseeded, reason="retrain")
    assert gov.registry.alias_version(CHAMPION) == champion, "approval does not move the champion"
    assert gov.registry.alias_version(CHALLENGER) == reseeded
    gov.set_champion(reseeded, expected=champion, reason="rollout done", cause="rollout")
    assert (gov.registry.alias_version(CHAMPION), gov.registry.alias_version(CHALLENGER)) == (reseeded, None)
    assert [gov.registry.get_version(v).stage for v in (champion, weak, reseeded)] == ["prod", "candidate", "prod"]


def test_approval_needs_a_current_pass(gov: Governance, tiny_model: Path, reseeded_model: Path, test_docs):
    first = register(gov, tiny_model)
    with pytest.raises(PromotionError, match="never been gated"):
        gov.approve(first, reason="no gate")
    second = register(gov, reseeded_model)
    assert gate(gov, first, test_docs) and gate(gov, second, test_docs)  # both pass with no champion
    make_champion(gov, first)
    with pytest.raises(ConflictError, match="the champion moved from none to 1 at .*: gate it again"):
        gov.approve(second, reason="stale pass")


def test_champion_set_refuses_a_version_that_is_not_prod(gov: Governance, tiny_model: Path):
    version = register(gov, tiny_model)
    with pytest.raises(PromotionError, match="stage=candidate: only a stage=prod version can become champion"):
        gov.set_champion(version, expected=None, reason="by hand")


def test_the_same_approval_retried_returns_the_entry_already_written(gov: Governance, tiny_model: Path, test_docs):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    first = gov.approve(version, reason="once")
    assert gov.approve(version, reason="once") == first
    change = gov.set_champion(version, expected=None, reason="first")
    assert gov.set_champion(version, expected=None, reason="first") == change  # a retry, not a conflict
    with pytest.raises(PromotionError, match="already the champion"):
        gov.set_champion(version, expected=version, reason="again")
    assert [e.kind for e in gov.ledger.entries()] == ["registration", "gate", "approval", "champion_change"]
    assert gov.verify().ok


def test_retire_and_reinstate(gov: Governance, tiny_model: Path, reseeded_model: Path, test_docs):
    first, second = register(gov, tiny_model), register(gov, reseeded_model)
    assert gate(gov, first, test_docs)
    make_champion(gov, first)
    assert gate(gov, second, test_docs)
    gov.approve(second, reason="approved")
    with pytest.raises(PromotionError, match="is the challenger"):
        gov.retire(second, reason="no")
    gov.set_champion(second, expected=first, reason="rollout done", cause="rollout")
    gov.retire(first, reason="superseded")
    assert gov.registry.get_version(first).tags["archived.reason"] == "retired"
    gov.reinstate(first, reason="needed for a rollback")
    assert gov.registry.get_version(first).stage == "prod"
    gov.ledger.append("rollback", subject={"model": gov.model, "version": second}, evidence={"to_version": first})
    with pytest.raises(PromotionError, match="archived as rolled_back: only a retired version"):
        gov.reinstate(second, reason="try")


@pytest.mark.parametrize("ref", ["/tmp/models/quick", "./model", "models:/ner/1", "runs:/abc/model"])
def test_an_artifact_path_is_refused(gov: Governance, ref: str):
    with pytest.raises(PromotionError, match="registry versions only"):
        gov.approve(ref, reason="path")


def test_unknown_versions_and_aliases_are_clear_errors(gov: Governance):
    with pytest.raises(RegistryError, match="no version 42"):
        gov.approve("42", reason="x")
    with pytest.raises(RegistryError, match="no version or alias 'blue'"):
        gov.resolve("blue")
    with pytest.raises(RegistryError, match="has no champion yet"):
        gov.resolve("champion")


def test_the_registry_factory_names_the_setting_to_fix():
    from nerops.errors import ConfigurationError
    from nerops.registry import get_registry
    from nerops.settings import Settings

    with pytest.raises(ConfigurationError, match="NEROPS_MLFLOW_TRACKING_URI 'ftp://x': unsupported scheme 'ftp'"):
        get_registry(Settings(mlflow_tracking_uri="ftp://x"))


def test_a_changed_lineage_tag_blocks_loading_and_approval(gov: Governance, tiny_model: Path, test_docs):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    gov.registry.set_tags(version, {"lineage.dataset_version": "forged"})
    with pytest.raises(LineageError, match="'dataset_version' changed from 'synthetic' to 'forged'"):
        gov.load(version)
    with pytest.raises(PromotionError, match="dataset_version"):
        gov.approve(version, reason="x")


def test_one_changed_artifact_byte_blocks_loading_and_approval(
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
        gov.approve(version, reason="x")


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


def test_crash_after_the_approval_entry_is_repaired_from_the_ledger(
    gov: Governance, tiny_model: Path, test_docs, monkeypatch: pytest.MonkeyPatch
):
    version = register(gov, tiny_model)
    assert gate(gov, version, test_docs)
    monkeypatch.setattr(gov, "apply", lambda *a: (_ for _ in ()).throw(OSError("registry down")))
    with pytest.raises(OSError):
        gov.approve(version, reason="x")
    monkeypatch.undo()
    report = gov.verify()
    assert not report.ok
    assert f"v{version} is tagged stage=candidate but the ledger says prod" in report.drift
    assert "alias challenger points at nothing but the ledger says 1" in report.drift
    gov.reconcile()
    assert gov.verify().ok
    assert gov.registry.alias_version(CHALLENGER) == version


def test_reconcile_replays_old_promotions_and_leaves_champion_changes_and_rollbacks_as_they_are(
    gov: Governance, tiny_model: Path, reseeded_model: Path, test_docs
):
    first, second = register(gov, tiny_model), register(gov, reseeded_model)
    assert gate(gov, first, test_docs)
    # a state folder from before this issue: a promotion entry, the registry not yet in step
    gov.ledger.append("promotion", subject={"model": gov.model, "version": first}, evidence={"reason": "old"})
    assert gov.reconcile() == [
        f"set v{first} stage=prod (from the ledger)",
        f"pointed alias champion at v{first} (from the ledger)",
    ]
    assert gate(gov, second, test_docs)
    gov.approve(second, reason="approved")
    gov.set_champion(second, expected=first, reason="rollout done", cause="rollout")
    assert gov.reconcile() == [] and gov.registry.alias_version(CHAMPION) == second
    gov.ledger.append("rollback", subject={"model": gov.model, "version": second}, evidence={"to_version": first})
    assert gov.reconcile() == [
        f"set v{second} stage=archived (from the ledger)",
        f"pointed alias champion at v{first} (from the ledger)",
    ]
    assert gov.reconcile() == [] and gov.registry.alias_version(CHAMPION) == first
    assert gov.registry.get_version(second).tags["archived.reason"] == "rolled_back"
    assert gov.verify().ok


def test_the_ledger_head_is_anchored_in_the_registry(gov: Governance, tiny_model: Path):
    register(gov, tiny_model)
    head = gov.ledger.head()
    assert gov.registry.read_anchor() == f"{head.seq}:{head.hash}"
    lines = gov.ledger.path.read_text().splitlines()
    gov.ledger.path.write_text("\n".join(lines[:-1]) + ("\n" if len(lines) > 1 else ""))
    report = gov.verify()
    assert not report.ok and "truncated" in report.describe()


def _move_champion(tracking_uri, model, artifact_root, ledger_path, target, reason, barrier, results) -> None:
    """One racer, in its own process: move the champion from v1 to ``target`` at the barrier."""
    registry = MlflowRegistry(tracking_uri, model, artifact_root=artifact_root)
    gov = Governance(registry, Ledger(Path(ledger_path), RegistryAnchor(registry)), actor=f"racer-{reason}")
    gov.state()  # warm up (imports, connections) before the start
    barrier.wait(timeout=60)
    try:
        entry = gov.set_champion(target, expected="1", reason=reason, cause="manual")
        results.put(("won", reason, entry.seq))
    except ConflictError as exc:
        results.put(("refused", reason, str(exc)))


def test_two_processes_moving_the_champion_from_the_same_predecessor(
    gov: Governance, tiny_model: Path, reseeded_model: Path, test_docs, tmp_path: Path
):
    import multiprocessing

    first, second = register(gov, tiny_model), register(gov, reseeded_model)
    assert gate(gov, first, test_docs)
    make_champion(gov, first)
    assert gate(gov, second, test_docs)
    approval = gov.approve(second, reason="approved")
    assert gov.approve(second, reason="approved") == approval  # the same approval retried: the same entry

    ctx = multiprocessing.get_context("spawn")
    barrier, results = ctx.Barrier(2), ctx.Queue()
    args = (gov.registry.tracking_uri, gov.model, gov.registry.artifact_root, str(gov.ledger.path))
    racers = [
        ctx.Process(target=_move_champion, args=(*args, version, reason, barrier, results))
        for version, reason in ((second, "a"), (second, "b"))
    ]
    for racer in racers:
        racer.start()
    outcomes = sorted(results.get(timeout=120) for _ in racers)
    for racer in racers:
        racer.join(30)
    assert [o[0] for o in outcomes] == ["refused", "won"], outcomes
    (_, loser, message), (_, winner, seq) = outcomes
    assert loser != winner
    assert f"cannot make champion v{second}: the champion moved from 1 to {second} at " in message
    assert f"(ledger entry {seq}, champion_change by racer-{winner})" in message
    changes = gov.ledger.find("champion_change", model=gov.model)
    assert [e.seq for e in changes][-1] == seq and sum(e.evidence["reason"] == winner for e in changes) == 1
    assert gov.state().champion == second and gov.verify().ok
