"""Training a named commit: the commit checked out as a worktree beside the project; refused when it cannot be, or
when the code a training process imported is not at the commit asked for."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from nerops.source import SourceError, checkout, train_at

ROOT = Path(__file__).resolve().parents[1]


def _git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def head() -> str:
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True).returncode != 0:
        pytest.skip("the project is not a git checkout here")
    return _git("rev-parse", "HEAD")


def test_a_commit_is_checked_out_once_as_a_clean_worktree_and_reused(head: str, tmp_path: Path):
    into = tmp_path / "checkouts"
    try:
        first = checkout(head, project=ROOT, into=into)
        assert first == into / head and _git("rev-parse", "HEAD", cwd=first) == head
        assert (first / "src" / "nerops" / "training_job.py").is_file()
        marker = first / "README.md"
        stamp = marker.stat().st_mtime_ns
        assert checkout(head, project=ROOT, into=into) == first and marker.stat().st_mtime_ns == stamp  # reused
        marker.write_text("changed\n")  # a dirty worktree is made again, clean
        again = checkout(head, project=ROOT, into=into)
        assert _git("status", "--porcelain", "--untracked-files=no", cwd=again) == ""
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(into / head)], cwd=ROOT, capture_output=True)
        subprocess.run(["git", "worktree", "prune"], cwd=ROOT, capture_output=True)


def test_a_commit_the_repository_does_not_have_is_refused_with_what_to_do(head: str, tmp_path: Path):
    missing = "0123456789abcdef0123456789abcdef01234567"
    with pytest.raises(SourceError, match=f"commit {missing} is not in the repository .* could not be fetched"):
        train_at(missing, "tiny", {}, state=tmp_path, actor=None)
    assert not (tmp_path / "checkouts" / missing).exists()


def test_a_folder_that_is_not_a_git_checkout_is_refused(head: str, tmp_path: Path):
    with pytest.raises(SourceError, match="is not a git checkout"):
        checkout(head, project=tmp_path, into=tmp_path / "checkouts")


def test_the_training_process_refuses_code_that_is_not_at_the_commit_asked_for(head: str, tmp_path: Path):
    """The child checks the commit of the code it imported before it trains anything."""
    other = "f" * 40
    result = tmp_path / "result.json"
    env = {**os.environ, "NEROPS_STATE_DIR": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-m", "nerops.training_job", "--config", "tiny", "--commit", other, "--result", str(result)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 3, done.stderr
    assert f"refused: asked for commit {other} but the code at {ROOT / 'src' / 'nerops'} is at" in done.stderr
    assert not result.exists() and not (tmp_path / "state" / "models").exists()
