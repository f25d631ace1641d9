"""The endpoint's verified local copies of model versions: it starts, and rolls back, while the registry is down.

Each version a deployment serves is kept under the endpoint's folder (``models/v<N>``). Before a copy
is loaded its bytes are hashed again and compared with the artifact hash recorded in the ledger at
registration; the ledger is local, so this needs no registry. When the registry answers, its lineage
tags are compared with the ledger too (a changed tag refuses the version, as at every load), and a
missing or changed copy is downloaded again; when it does not answer, an intact copy is used and a
changed or missing one is refused, with the reason. Copies of versions neither served nor among the
last two champions are removed.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from nerops.decisions import CHAMPION_KINDS
from nerops.errors import LineageError, TransientBackendError
from nerops.governance import Governance
from nerops.registry.lineage import artifact_sha256, lineage_changes

log = logging.getLogger("nerops.endpoint")


class LocalCopies:
    def __init__(self, folder: Path, gov: Governance) -> None:
        self.folder = folder
        self.gov = gov

    def get(self, version: str) -> Path:
        """A verified folder of ``version``; raises :class:`LineageError` when none can be had."""
        model = self.gov.model
        recorded = self.gov.registration(version)
        if recorded is None:
            raise LineageError(f"{model} v{version} has no registration entry in the ledger (orphan)")
        try:
            changes = lineage_changes(recorded, self.gov.registry.get_version(version).lineage)
            unreachable = None
        except TransientBackendError as exc:
            changes, unreachable = [], exc
        if changes:
            raise LineageError(f"{model} v{version} fails its lineage check: " + "; ".join(changes))
        path = self.folder / f"v{version}"
        if path.is_dir() and artifact_sha256(path) == recorded["artifact_sha256"]:
            if unreachable is not None:
                log.warning("%s v%s: the registry is unreachable; serving the verified local copy", model, version)
            return path
        if unreachable is not None:
            what = "changed since it was verified" if path.exists() else "missing"
            raise LineageError(
                f"{model} v{version}: the local copy is {what} and the registry is unreachable ({unreachable})"
            )
        self.folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.folder, prefix=f".v{version}-") as tmp:
            fresh = self.gov.check_lineage(version, Path(tmp))  # downloaded, tags and bytes checked
            if path.exists():
                shutil.rmtree(path)
            os.replace(fresh, path)
        return path

    def prune(self, serving: set[str]) -> list[str]:
        """Remove copies of versions neither in ``serving`` nor among the last two champions; returns those removed."""
        champions: list[str] = []
        for entry in self.gov.ledger.find(model=self.gov.model):
            if entry.kind not in CHAMPION_KINDS:
                continue
            # a rollback names the version rolled back; the champion it restores is its "to_version"
            version = entry.evidence.get("to_version") if entry.kind == "rollback" else entry.subject.get("version")
            if version is not None:
                champions = [v for v in champions if v != str(version)] + [str(version)]
        keep = serving | set(champions[-2:])
        removed = []
        for path in sorted(self.folder.glob("v*")):
            if path.is_dir() and path.name[1:] not in keep:
                shutil.rmtree(path, ignore_errors=True)
                removed.append(path.name[1:])
        return removed
