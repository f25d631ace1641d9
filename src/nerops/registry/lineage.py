"""Lineage: what a model version was made from, written once at registration.

Tags on every version (prefix ``lineage.``): dataset version, training config hash, MLflow run
id, git commit, library versions and the sha256 of the model artifacts. The artifacts are
hashed again before every load and compared with what was recorded.
"""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path

LINEAGE_PREFIX = "lineage."


def artifact_sha256(folder: Path) -> str:
    """sha256 over every file under ``folder``: relative path and bytes, in path order."""
    folder = Path(folder)
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(path.relative_to(folder).as_posix().encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def git_commit(start: Path | None = None) -> str:
    """The commit of the checkout holding ``start`` (``+dirty`` if it has changes), or ``unknown``."""
    where = Path(start or Path(__file__).resolve().parent)
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if dirty else commit


def lineage_tags(lineage: dict[str, str]) -> dict[str, str]:
    return {f"{LINEAGE_PREFIX}{key}": str(value) for key, value in lineage.items()}


def lineage_from_tags(tags: dict[str, str]) -> dict[str, str]:
    return {key[len(LINEAGE_PREFIX) :]: value for key, value in tags.items() if key.startswith(LINEAGE_PREFIX)}


def lineage_changes(recorded: dict[str, str], current: dict[str, str]) -> list[str]:
    """Readable differences between the lineage recorded at registration and what is there now."""
    changes = []
    for key in sorted(set(recorded) | set(current)):
        before, after = recorded.get(key), current.get(key)
        if before != after:
            if after is None:
                changes.append(f"lineage tag {key!r} was removed (recorded {before!r})")
            elif before is None:
                changes.append(f"lineage tag {key!r} was added ({after!r}) after registration")
            else:
                changes.append(f"lineage tag {key!r} changed from {before!r} to {after!r}")
    return changes
