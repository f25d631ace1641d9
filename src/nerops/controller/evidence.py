"""The rollout's evidence file: every look as one JSON line (the query, the window, the values, the samples,
the thresholds, the verdict), appended and fsynced; its sha256 goes into each ledger decision entry, so an
auditor can check that the file the report is read from is the one the decisions were taken on.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def append(path: Path, record: dict) -> tuple[int, str]:
    """Append one look; return the file's line count and sha256 after it."""
    line = (json.dumps(record, sort_keys=True, separators=(",", ":"), default=str) + "\n").encode("utf-8")
    with path.open("ab") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())
    return digest(path)


def digest(path: Path) -> tuple[int, str]:
    """``(lines, sha256)`` of the evidence file (``(0, sha256 of nothing)`` when it does not exist yet)."""
    if not path.exists():
        return 0, hashlib.sha256(b"").hexdigest()
    data = path.read_bytes()
    return data.count(b"\n"), hashlib.sha256(data).hexdigest()


def read(path: Path) -> list[dict]:
    """Every complete look (a torn last line, from a crash mid-write, is left out)."""
    if not path.exists():
        return []
    looks = []
    for line in path.read_bytes().splitlines():
        try:
            looks.append(json.loads(line))
        except ValueError:
            continue
    return looks
