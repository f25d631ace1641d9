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
def tiny_model(synthetic_data: tuple[Path, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A CRF trained for a few iterations on synthetic CVs: shared by every test that predicts."""
    from nerops.data import read_corpus
    from nerops.model.config import get_config
    from nerops.model.pipeline import train_model

    out = tmp_path_factory.mktemp("models") / "tiny"
    train_model(
        read_corpus(synthetic_data[0]), get_config("quick", max_iterations=30), out, dataset_version="synthetic"
    )
    return out
