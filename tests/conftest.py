"""Shared fixtures: an isolated state folder, synthetic data, and one tiny model per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.cvs import synthetic_zip

SHARED_DATA = Path(os.environ.get("NEROPS_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared/data/resumes")
TRAIN_ZIP = SHARED_DATA / "dotin_545_cvs_train_v2.zip"
TEST_ZIP = SHARED_DATA / "dotin_set_aside_test_v2_50cvs.zip"

needs_real_data = pytest.mark.skipif(
    not TRAIN_ZIP.is_file(), reason=f"the dotin zips are not at {SHARED_DATA} (set NEROPS_DATA_DIR)"
)

SYNTHETIC_LINEAGE = {
    "dataset_version": "synthetic", "config_hash": "cfg", "git_commit": "abc", "libraries": {}, "params": {},
    "metrics": {},
}  # fmt: skip


def model_copy(source: Path, copy: Path, why: str) -> Path:
    """A copy of a model's folder with one extra file saying ``why``: the same model, another artifact hash (so a
    version of its own when registered)."""
    import shutil

    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source, copy)
    (copy / "VARIANT").write_text(why + "\n")
    return copy


def register_synthetic(gov, model: Path) -> str:
    """Register a model trained on the synthetic CVs (a lineage of test values): its version, a candidate."""
    return gov.register(model, **SYNTHETIC_LINEAGE).version


def approve_synthetic(gov, model: Path, docs, personal, policy=None) -> str:
    """Register a model trained on the synthetic CVs, gate it on ``docs`` (a pass is asserted) and approve it
    (``stage=prod``, alias ``challenger``): the version. ``policy`` defaults to F1 >= 0.5 and latency <= 3x."""
    from nerops.gate import GatePolicy
    from nerops.gating import run_gate

    policy = policy or GatePolicy(min_micro_f1=0.5, max_latency_ratio=3.0, bootstrap_samples=200)
    version = register_synthetic(gov, model)
    decision = run_gate(gov, version, docs, policy, test_sha256="0" * 64, personal=personal)[0]
    assert decision.passed, decision
    gov.approve(version, reason="test")
    return version


@pytest.fixture(autouse=True)
def _isolated_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own state folder; nothing touches the user's home or the repo."""
    state = tmp_path / "state"
    monkeypatch.setenv("NEROPS_STATE_DIR", str(state))
    return state


@pytest.fixture(scope="session")
def synthetic_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("synthetic")
    return synthetic_zip(folder / "train.zip", 40, seed=1, folder="train"), synthetic_zip(
        folder / "test.zip", 10, seed=2, folder="test"
    )


@pytest.fixture(scope="session")
def synthetic_personal(synthetic_data: tuple[Path, Path]):
    """The synthetic training set's personal strings: what the gate's artifact audit looks for."""
    from nerops.data import read_corpus
    from nerops.model.personal import PersonalStrings

    return PersonalStrings.from_documents(read_corpus(synthetic_data[0]))


@pytest.fixture(scope="session")
def tiny_model(synthetic_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CRF trained for a few iterations on synthetic CVs: shared by every test that predicts."""
    return _train_tiny(synthetic_data, tmp_path_factory.mktemp("models") / "tiny", max_iterations=30)


def _train_tiny(synthetic_data, out: Path, **overrides) -> Path:
    from nerops.data import read_corpus
    from nerops.model.config import get_config
    from nerops.model.pipeline import train_model

    train_model(read_corpus(synthetic_data[0]), get_config("quick", **overrides), out, dataset_version="synthetic")
    return out


@pytest.fixture(scope="session")
def weak_model(synthetic_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Trained on a tenth of the synthetic CVs for two iterations: the gate must reject it."""
    return _train_tiny(synthetic_data, tmp_path_factory.mktemp("models") / "weak", max_iterations=2, train_fraction=0.1)


@pytest.fixture(scope="session")
def reseeded_model(synthetic_data, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's config with another seed."""
    return _train_tiny(synthetic_data, tmp_path_factory.mktemp("models") / "reseeded", max_iterations=30, seed=1)


@pytest.fixture(scope="session")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One MLflow SQLite store per session (creating one costs seconds); tests use their own model names."""
    return f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory: pytest.TempPathFactory):
    """One temporary Prefect server for the whole session, heartbeats off (they cost 1 s per flow)."""
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=90), temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        yield
