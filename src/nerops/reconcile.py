"""``verify`` and ``reconcile``: where registry and ledger disagree, and repairing it (the ledger wins).

verify: the chain and its anchors (the registry's anchor may lag: with ``catch_up`` it is brought to the
head once reachable, and the report says so), orphan versions (in the registry, not in the ledger), and
drift (stage tags or aliases that differ from the state replayed from the ledger).
reconcile: record or archive orphans, re-apply the ledger's state to the registry, catch the anchor up.
A champion change or a rollback is the ledger's state like any other: reconcile leaves it as it is.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nerops.decisions import ModelState
from nerops.errors import NeropsError
from nerops.ledger import VerifyReport
from nerops.registry import CHALLENGER, CHAMPION, STAGE_TAG, VersionInfo
from nerops.registry.lineage import artifact_sha256


@dataclass
class GovernanceReport:
    """What ``nerops ledger verify`` prints: the chain's state plus registry/ledger agreement."""

    ledger: VerifyReport
    orphans: list[str] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.ledger.ok and not self.orphans and not self.drift

    def describe(self) -> str:
        lines = [self.ledger.describe()]
        lines += [f"orphan: registry version {v} has no registration entry in the ledger" for v in self.orphans]
        lines += [f"drift: {d}" for d in self.drift]
        return "\n".join(lines + self.notes)


def verify(gov, *, catch_up: bool = False) -> GovernanceReport:
    report = gov.ledger.verify()
    notes = []
    lagging = report.remote != report.head or (gov.ledger.anchor is not None and report.anchor is None)
    if catch_up and report.ok and gov.ledger.remote is not None and report.head is not None and lagging:
        try:
            before, after = gov.ledger.catch_up()
            notes.append(
                f"caught up: the registry anchor moved from entry {before.seq if before else 0} to {after.seq}"
            )
        except (NeropsError, OSError) as exc:
            notes.append(f"the registry anchor could not catch up yet: {exc}")
    registered = {e.subject.get("version") for e in gov.ledger.find("registration", model=gov.model)}
    versions = gov.registry.list_versions()
    orphans = [v.version for v in versions if v.version not in registered]
    return GovernanceReport(report, orphans=orphans, drift=drift(gov, versions), notes=notes)


def drift(gov, versions: list[VersionInfo]) -> list[str]:
    """Where the registry's stage tags and aliases differ from the ledger's state."""
    state = gov.state()
    found = []
    for info in versions:
        want = state.stage(info.version)
        if want and info.stage != want:
            found.append(f"v{info.version} is tagged stage={info.stage} but the ledger says {want}")
    for alias, want in ((CHAMPION, state.champion), (CHALLENGER, state.challenger)):
        have = gov.registry.alias_version(alias)
        if have != want:
            found.append(f"alias {alias} points at {have or 'nothing'} but the ledger says {want or 'none'}")
    return found


def reconcile(gov) -> list[str]:
    """Repair what a crash left: record orphans, re-apply the ledger's decisions, catch the anchor up."""
    actions = []
    report = verify(gov)
    for version in report.orphans:
        info = gov.registry.get_version(version)
        with tempfile.TemporaryDirectory(prefix="nerops-orphan-") as tmp:
            matches = info.lineage.get("artifact_sha256") == artifact_sha256(
                gov.registry.download(version, Path(tmp) / "m")
            )
        if matches:
            evidence = {"lineage": info.lineage, "stage": "candidate", "repaired": "registered without ledger entry"}
            gov.ledger.append(
                "registration", subject={"model": gov.model, "version": version}, evidence=evidence, actor=gov.actor
            )
            actions.append(f"recorded orphan v{version} in the ledger (its artifacts match its lineage tags)")
        else:
            reason = "orphan whose artifacts do not match its lineage tags"
            gov.ledger.append(
                "archive",
                subject={"model": gov.model, "version": version},
                evidence={"archived": "fault", "reason": reason},
                actor=gov.actor,
            )
            gov.registry.set_tags(version, {STAGE_TAG: "archived", "archived.reason": "fault"})
            actions.append(f"archived orphan v{version}: {reason}")
    state = gov.state()
    actions += gov.apply(state, [v.version for v in gov.registry.list_versions() if state.stage(v.version)])
    problems = gov.ledger.verify().problems
    if any(p.kind == "anchor_behind" for p in problems):
        if gov.ledger.remote is not None:
            gov.ledger.catch_up()
        if gov.ledger.anchor is not None and any(p.kind == "anchor_behind" for p in gov.ledger.verify().problems):
            gov.ledger.reanchor()
        actions.append("re-anchored the ledger head in the registry")
    return actions


def apply_state(gov, state: ModelState, versions: list[str]) -> list[str]:
    """Make the registry's stage tags and aliases show the ledger's state; return what changed."""
    changed = []
    for version in versions:
        want = state.stage(version)
        if want is None:
            continue
        info = gov.registry.get_version(version)
        tags = {STAGE_TAG: want, **({"archived.reason": state.archived[version]} if want == "archived" else {})}
        if any(info.tags.get(k) != v for k, v in tags.items()):
            gov.registry.set_tags(version, tags)
            changed.append(f"set v{version} stage={want} (from the ledger)")
    for alias, want in ((CHAMPION, state.champion), (CHALLENGER, state.challenger)):
        have = gov.registry.alias_version(alias)
        if have == want:
            continue
        if want is None:
            gov.registry.delete_alias(alias)
            changed.append(f"removed alias {alias} (from the ledger)")
        else:
            gov.registry.set_alias(alias, want)
            changed.append(f"pointed alias {alias} at v{want} (from the ledger)")
    return changed
