"""Governance: register, check lineage, gate, promote and reconcile, with the ledger as commit point.

Order of writes, so that a failure leaves nothing half-done:

- register: validate the model folder -> registry version (tags: lineage, stage=candidate)
  -> ledger ``registration`` (the commit point). A crash in between leaves an *orphan* version
  that :meth:`Governance.verify` reports and :meth:`Governance.reconcile` repairs.
- gate / promote: validate (lineage intact, current pass) -> ledger entry (commit point)
  -> registry tags and aliases. A crash after the ledger write is repaired by reconcile,
  which re-applies the ledger's decisions to the registry (the ledger wins).
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nerops.errors import LineageError, PromotionError, RegistryError
from nerops.gate import GateResult
from nerops.ledger import Head, Ledger, VerifyReport
from nerops.model.pipeline import Extractor
from nerops.registry import CHALLENGER, CHAMPION, STAGE_TAG, ModelRegistry, VersionInfo
from nerops.registry.lineage import artifact_sha256, lineage_changes, lineage_tags

SYNTHETIC_EXAMPLE = "Jane Example  Software Engineer  jane.example@example.com  Python, SQL  2015-2020 Example Corp"


class RegistryAnchor:
    """Keeps the ledger's head in a tag of the registered model: outside the ledger file."""

    def __init__(self, registry: ModelRegistry) -> None:
        self.registry = registry

    def read(self) -> Head | None:
        value = self.registry.read_anchor()
        if not value:
            return None
        seq, _, digest = value.partition(":")
        return Head(int(seq), digest)

    def write(self, head: Head) -> None:
        self.registry.write_anchor(f"{head.seq}:{head.hash}")


@dataclass
class GovernanceReport:
    """What ``nerops ledger verify`` prints: the chain's state plus registry/ledger agreement."""

    ledger: VerifyReport
    orphans: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ledger.ok and not self.orphans and not self.drift

    def describe(self) -> str:
        lines = [self.ledger.describe()]
        lines += [f"orphan: registry version {v} has no registration entry in the ledger" for v in self.orphans]
        lines += [f"drift: {d}" for d in self.drift]
        return "\n".join(lines)


class Governance:
    def __init__(self, registry: ModelRegistry, ledger: Ledger, *, actor: str) -> None:
        self.registry = registry
        self.ledger = ledger
        self.actor = actor
        self.model = registry.model_name

    # --- references ----------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """A version number from a number or an alias; an artifact path is refused."""
        ref = str(ref).strip()
        if "/" in ref or "\\" in ref or ref.startswith((".", "~")) or Path(ref).exists():
            raise PromotionError(
                f"{ref!r} looks like an artifact path: deployments and promotions take registry versions only "
                f"(a version number of {self.model}, or the alias {CHAMPION!r} / {CHALLENGER!r})"
            )
        if ref.lstrip("v").isdigit():
            return self.registry.get_version(ref.lstrip("v")).version
        version = self.registry.alias_version(ref)
        if version is None:
            raise RegistryError(f"{self.model} has no version or alias {ref!r}")
        return version

    # --- training and registration --------------------------------------------------------

    def record_training(self, evidence: dict[str, object]) -> None:
        self.ledger.append("training", subject={"model": self.model}, evidence=evidence, actor=self.actor)

    def register(
        self,
        model_dir: Path,
        *,
        dataset_version: str,
        config_hash: str,
        git_commit: str,
        libraries: dict[str, str],
        params: dict[str, object],
        metrics: dict[str, float],
    ) -> VersionInfo:
        """Log and register a trained model folder as a new candidate version."""
        Extractor.load(model_dir)  # validate before writing anything
        lineage = {
            "dataset_version": dataset_version,
            "config_hash": config_hash,
            "git_commit": git_commit,
            "artifact_sha256": artifact_sha256(model_dir),
            **{f"lib.{name}": version for name, version in sorted(libraries.items())},
        }
        info = self.registry.log_version(
            model_dir,
            params=params,
            metrics=metrics,
            tags={**lineage_tags(lineage), STAGE_TAG: "candidate"},
            input_example=SYNTHETIC_EXAMPLE,
        )
        lineage["run_id"] = info.run_id or ""
        self.registry.set_tags(info.version, lineage_tags({"run_id": lineage["run_id"]}))
        self.ledger.append(
            "registration",
            subject={"model": self.model, "version": info.version},
            evidence={"lineage": lineage, "metrics": metrics, "stage": "candidate"},
            actor=self.actor,
        )
        return self.registry.get_version(info.version)

    def registration(self, version: str) -> dict[str, str] | None:
        entries = self.ledger.find("registration", model=self.model, version=str(version))
        return dict(entries[-1].evidence["lineage"]) if entries else None

    # --- lineage ---------------------------------------------------------------------------

    def check_lineage(self, version: str, into: Path) -> Path:
        """Download a version's artifacts under ``into``, check tags and bytes against the ledger; return the folder."""
        info = self.registry.get_version(version)
        recorded = self.registration(info.version)
        if recorded is None:
            raise LineageError(f"{self.model} v{version} has no registration entry in the ledger (orphan)")
        changes = lineage_changes(recorded, info.lineage)
        folder = self.registry.download(info.version, Path(into) / f"v{version}")
        actual = artifact_sha256(folder)
        if actual != recorded["artifact_sha256"]:
            changes.append(
                f"model artifacts changed: sha256 {actual[:12]}… != recorded {recorded['artifact_sha256'][:12]}…"
            )
        if changes:
            raise LineageError(f"{self.model} v{version} fails its lineage check: " + "; ".join(changes))
        return folder

    def verify_lineage(self, version: str) -> None:
        """Check a version's lineage; nothing is kept."""
        with tempfile.TemporaryDirectory(prefix="nerops-lineage-") as tmp:
            self.check_lineage(version, Path(tmp))

    def load(self, version: str) -> Extractor:
        """A verified model: lineage and artifact hash checked before loading."""
        with tempfile.TemporaryDirectory(prefix="nerops-load-") as tmp:
            return Extractor.load(self.check_lineage(version, Path(tmp)))

    # --- gate and promotion ------------------------------------------------------------------

    def record_gate(self, result: GateResult, evidence: dict[str, object]) -> None:
        """Ledger first (the decision), then tags on the version for people browsing the registry."""
        entry = self.ledger.append(
            "gate",
            subject={"model": self.model, "version": result.challenger},
            evidence={
                "verdict": result.verdict,
                "champion_version": result.champion,
                "summary": result.summary(),
                **evidence,
            },
            actor=self.actor,
        )
        self.registry.set_tags(
            result.challenger,
            {"gate.verdict": result.verdict, "gate.champion": result.champion or "none", "gate.ledger_seq": entry.seq},
        )

    def current_pass(self, version: str) -> tuple[bool, str]:
        gates = self.ledger.find("gate", model=self.model, version=str(version))
        if not gates:
            return False, f"v{version} has never been gated"
        last = gates[-1]
        champion = self.registry.alias_version(CHAMPION)
        if last.evidence["verdict"] != "pass":
            return False, f"v{version}'s last gate (ledger entry {last.seq}) failed: {last.evidence['summary']}"
        if last.evidence["champion_version"] != champion:
            return False, (
                f"v{version} passed against champion {last.evidence['champion_version'] or 'none'} "
                f"(ledger entry {last.seq}), "
                f"but the champion is now {champion}: gate it again"
            )
        return True, f"gate pass in ledger entry {last.seq}"

    def promote(self, ref: str, *, reason: str) -> VersionInfo:
        """Tag a version ``stage=prod`` and make it champion: only with a current gate pass and intact lineage."""
        version = self.resolve(ref)
        info = self.registry.get_version(version)
        if info.stage == "archived":
            raise PromotionError(f"v{version} is archived: {info.tags.get('archived.reason', 'no reason given')}")
        ok, why = self.current_pass(version)
        if not ok:
            raise PromotionError(f"cannot promote v{version}: {why}")
        try:
            self.verify_lineage(version)
        except LineageError as exc:
            raise PromotionError(f"cannot promote: {exc}") from exc
        previous = self.registry.alias_version(CHAMPION)
        self.ledger.append(
            "promotion",
            subject={"model": self.model, "version": version},
            evidence={"stage": "prod", "previous_champion": previous, "reason": reason, "gate": why},
            actor=self.actor,
        )
        self._apply_promotion(version)
        return self.registry.get_version(version)

    def _apply_promotion(self, version: str) -> None:
        self.registry.set_tags(version, {STAGE_TAG: "prod"})
        self.registry.set_alias(CHAMPION, version)

    # --- verify and reconcile -----------------------------------------------------------------

    def verify(self) -> GovernanceReport:
        registered = {e.subject.get("version") for e in self.ledger.find("registration", model=self.model)}
        versions = self.registry.list_versions()
        orphans = [v.version for v in versions if v.version not in registered]
        return GovernanceReport(self.ledger.verify(), orphans=orphans, drift=self._drift(versions))

    def _drift(self, versions: list[VersionInfo]) -> list[str]:
        """Where the registry's stage tags and champion alias differ from the ledger's decisions."""
        expected = self.expected_state()
        drift = []
        for info in versions:
            want = expected["stages"].get(info.version)
            if want and info.stage != want:
                drift.append(f"v{info.version} is tagged stage={info.stage} but the ledger says {want}")
        champion = self.registry.alias_version(CHAMPION)
        if expected["champion"] and champion != expected["champion"]:
            drift.append(f"alias champion points at {champion} but the ledger says {expected['champion']}")
        return drift

    def expected_state(self) -> dict:
        stages: dict[str, str] = {}
        champion = None
        for entry in self.ledger.find(model=self.model):
            version = entry.subject.get("version")
            if entry.kind == "registration":
                stages[version] = "candidate"
            elif entry.kind == "promotion":
                stages[version], champion = "prod", version
            elif entry.kind == "archive":
                stages[version] = "archived"
        return {"stages": stages, "champion": champion}

    def reconcile(self) -> list[str]:
        """Repair what a crash left: record orphans, re-apply the ledger's decisions, re-anchor."""
        actions = []
        report = self.verify()
        for version in report.orphans:
            info = self.registry.get_version(version)
            with tempfile.TemporaryDirectory(prefix="nerops-orphan-") as tmp:
                matches = info.lineage.get("artifact_sha256") == artifact_sha256(
                    self.registry.download(version, Path(tmp) / "m")
                )
            if matches:
                evidence = {
                    "lineage": info.lineage,
                    "stage": "candidate",
                    "repaired": "registered without ledger entry",
                }
                self.ledger.append(
                    "registration",
                    subject={"model": self.model, "version": version},
                    evidence=evidence,
                    actor=self.actor,
                )
                actions.append(f"recorded orphan v{version} in the ledger (its artifacts match its lineage tags)")
            else:
                reason = "orphan whose artifacts do not match its lineage tags"
                self.ledger.append(
                    "archive",
                    subject={"model": self.model, "version": version},
                    evidence={"reason": reason},
                    actor=self.actor,
                )
                self.registry.set_tags(version, {STAGE_TAG: "archived", "archived.reason": reason})
                actions.append(f"archived orphan v{version}: {reason}")
        expected = self.expected_state()
        for info in self.registry.list_versions():
            want = expected["stages"].get(info.version)
            if want and info.stage != want:
                self.registry.set_tags(info.version, {STAGE_TAG: want})
                actions.append(f"set v{info.version} stage={want} (from the ledger)")
        if expected["champion"] and self.registry.alias_version(CHAMPION) != expected["champion"]:
            self.registry.set_alias(CHAMPION, expected["champion"])
            actions.append(f"pointed alias champion at v{expected['champion']} (from the ledger)")
        if any(p.kind == "anchor_behind" for p in self.ledger.verify().problems):
            self.ledger.reanchor()
            actions.append("re-anchored the ledger head in the registry")
        return actions
