"""The code a retrain trains: this checkout, or a named commit checked out beside it.

A retrain asked for a commit (a GitHub push, the training workflow) trains *that* code: the commit is checked
out as a detached git worktree under ``<state>/checkouts/<sha>`` (fetched from ``origin`` when the repository
does not have it yet) and the training runs in a child process that imports the package from that worktree.
The child reports the commit of the code it actually imported; the run refuses when it is not the one asked for,
so the lineage's ``git_commit`` (trained) and ``requested_commit`` agree or there is no model.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from nerops.errors import LineageError

KEEP_CHECKOUTS = 5  # older worktrees are removed when a new one is made
GIT_TIMEOUT_S = 300


class SourceError(LineageError):
    """The asked-for code cannot be checked out, or the code trained is not the code asked for."""


def project_dir() -> Path:
    """The project's git checkout: ``NEROPS_PROJECT_DIR`` (the workers' setting), else the one holding this file."""
    configured = os.environ.get("NEROPS_PROJECT_DIR")
    return Path(configured).resolve() if configured else Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path, timeout: float = GIT_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)


def has_commit(project: Path, commit: str) -> bool:
    return _git("cat-file", "-e", f"{commit}^{{commit}}", cwd=project).returncode == 0


def checkout(commit: str, *, project: Path, into: Path) -> Path:
    """A clean worktree of ``commit`` under ``into`` (made once, reused while it is clean and at that commit)."""
    if shutil.which("git") is None:
        raise SourceError(f"cannot train commit {commit}: git is not installed on this worker")
    if _git("rev-parse", "--git-dir", cwd=project).returncode != 0:
        raise SourceError(f"cannot train commit {commit}: {project} is not a git checkout (set NEROPS_PROJECT_DIR)")
    if not has_commit(project, commit):
        fetched = _git("fetch", "--quiet", "origin", commit, cwd=project)
        if fetched.returncode != 0 or not has_commit(project, commit):
            why = (fetched.stderr or fetched.stdout).strip().splitlines()[-1:] or ["no output"]
            raise SourceError(
                f"commit {commit} is not in the repository at {project} and could not be fetched from origin "
                f"({why[0][:300]}): push it, or fetch it on the worker"
            )
    into.mkdir(parents=True, exist_ok=True)
    target = into / commit
    if target.exists():
        head = _git("rev-parse", "HEAD", cwd=target).stdout.strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no", cwd=target).stdout.strip()
        if head == commit and not dirty:
            return target
        _git("worktree", "remove", "--force", str(target), cwd=project)
        shutil.rmtree(target, ignore_errors=True)
    _git("worktree", "prune", cwd=project)
    made = _git("worktree", "add", "--detach", "--force", str(target), commit, cwd=project)
    if made.returncode != 0:
        raise SourceError(f"could not check out commit {commit} into {target}: {made.stderr.strip()[:500]}")
    _prune(project, into, keep=target)
    return target


def _prune(project: Path, into: Path, *, keep: Path) -> None:
    others = sorted((p for p in into.iterdir() if p.is_dir() and p != keep), key=lambda p: p.stat().st_mtime)
    for old in others[: max(0, len(others) - (KEEP_CHECKOUTS - 1))]:
        _git("worktree", "remove", "--force", str(old), cwd=project)
        shutil.rmtree(old, ignore_errors=True)


def train_at(
    commit: str, config_name: str, overrides: dict[str, object], *, state: Path, actor: str | None
) -> dict[str, object]:
    """Train ``config_name`` with the code at ``commit``, in a child process importing that code; the training
    result (as :func:`nerops.lifecycle.train_candidate` returns it) with ``git_commit`` and ``requested_commit``."""
    code = checkout(commit, project=project_dir(), into=state / "checkouts")
    if not (code / "src" / "nerops" / "training_job.py").is_file():
        raise SourceError(
            f"commit {commit} predates the training entry point nerops.training_job: it cannot be trained by commit"
        )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(code / "src"), str(code)])}
    with tempfile.TemporaryDirectory(prefix="nerops-train-") as tmp:
        result_file = Path(tmp) / "result.json"
        args = [sys.executable, "-m", "nerops.training_job", "--config", config_name, "--commit", commit]
        args += ["--overrides", json.dumps(overrides), "--result", str(result_file)]
        if actor:
            args += ["--actor", actor]
        done = subprocess.run(args, cwd=code, env=env, check=False)
        if done.returncode != 0 or not result_file.is_file():
            raise SourceError(f"training at commit {commit} failed (exit {done.returncode}): see the log above")
        result = json.loads(result_file.read_text(encoding="utf-8"))
    trained = str(result.get("git_commit", ""))
    if trained != commit:
        raise SourceError(f"asked to train commit {commit} but the code trained was at {trained or 'unknown'}")
    return result
