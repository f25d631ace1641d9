"""Governance: register, check lineage, gate, approve, move the champion, with the ledger as commit point.

Order of writes, so that a failure leaves nothing half-done:

- register: look the model folder's hash up (a retry returns the version already made) -> registry
  version (tags: lineage, stage=candidate) -> ledger ``registration`` (the commit point). A crash in
  between leaves an *orphan* version that ``verify`` reports and ``reconcile`` repairs.
- approve / champion changes / retire / reinstate: validate (lineage intact; a fault model only under the
  ``demo`` or ``test`` rollout profile, :meth:`Governance._fault_allowed`) -> compare-and-append under
  the ledger lock (the precondition, e.g. "the champion is still 3", is checked against the ledger
  inside the lock; the same request retried returns the entry already written) -> registry tags and
  aliases, a view of the ledger that ``reconcile`` re-applies after a crash (the ledger wins).

The state machine itself (which kinds move what) is :mod:`nerops.decisions`.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable
from pathlib import Path

from nerops.decisions import (
    ModelState,
    Ref,
    Refusal,
    approval_refusal,
    champion_refusal,
    reinstate_refusal,
    replay,
    retire_refusal,
)
from nerops.errors import ConflictError, LineageError, PromotionError, RegistryError, TransientBackendError
from nerops.gate import GateResult
from nerops.ledger import Entry, Ledger
from nerops.model.faults import FAULT_PROFILES, fault_lineage
from nerops.model.pipeline import Extractor
from nerops.registry import CHALLENGER, CHAMPION, STAGE_TAG, ModelRegistry, VersionInfo
from nerops.registry.anchor import RegistryAnchor
from nerops.registry.lineage import artifact_sha256, lineage_changes, lineage_tags
from nerops.settings import get_settings

__all__ = ["SYNTHETIC_EXAMPLE", "Governance", "RegistryAnchor", "request_key"]

SYNTHETIC_EXAMPLE = "Jane Example  Software Engineer  jane.example@example.com  Python, SQL  2015-2020 Example Corp"


class Governance:
    def __init__(self, registry: ModelRegistry, ledger: Ledger, *, actor: str) -> None:
        self.registry = registry
        self.ledger = ledger
        self.actor = actor
        self.model = registry.model_name

    def state(self) -> ModelState:
        """The model's stages, champion and challenger, replayed from the ledger alone."""
        return replay(self.ledger.find(model=self.model))

    # --- references ----------------------------------------------------------------------

    def resolve(self, ref: str) -> str:
        """A version number from a number or an alias (read from the ledger); an artifact path is refused."""
        ref = str(ref).strip()
        if "/" in ref or "\\" in ref or ref.startswith((".", "~")) or Path(ref).exists():
            raise PromotionError(
                f"{ref!r} looks like an artifact path: deployments and approvals take registry versions only "
                f"(a version number of {self.model}, or the alias {CHAMPION!r} / {CHALLENGER!r})"
            )
        if ref.lstrip("v").isdigit():
            return self.registry.get_version(ref.lstrip("v")).version
        if ref not in (CHAMPION, CHALLENGER):
            raise RegistryError(f"{self.model} has no version or alias {ref!r}")
        state = self.state()
        version = state.champion if ref == CHAMPION else state.challenger
        if version is None:
            raise RegistryError(f"{self.model} has no {ref} yet (according to the ledger)")
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
        extra: dict[str, str] | None = None,
    ) -> VersionInfo:
        """Log and register a trained model folder as a new candidate version (once: a retry finds it).

        ``extra``: more lineage (``requested_commit`` of a retrain asked for a commit)."""
        extractor = Extractor.load(model_dir)  # validate before writing anything
        lineage = {
            "dataset_version": dataset_version,
            "config_hash": config_hash,
            "git_commit": git_commit,
            **(extra or {}),
            "artifact_sha256": artifact_sha256(model_dir),
            **{f"lib.{name}": version for name, version in sorted(libraries.items())},
            # a pipeline with a fault built in says so, whoever registers it (nerops.model.faults)
            **fault_lineage(extractor.nlp, extractor.meta),
        }
        existing = self.registry.find_by_artifacts(lineage["artifact_sha256"])
        if existing is not None:
            if self.registration(existing.version) is None:
                self._record_registration(existing.version, existing.lineage, metrics, repaired="retried registration")
            return self.registry.get_version(existing.version)
        info = self.registry.log_version(
            model_dir,
            params=params,
            metrics=metrics,
            tags={**lineage_tags(lineage), STAGE_TAG: "candidate"},
            input_example=SYNTHETIC_EXAMPLE,
        )
        lineage["run_id"] = info.run_id or ""
        self.registry.set_tags(info.version, lineage_tags({"run_id": lineage["run_id"]}))
        self._record_registration(info.version, lineage, metrics)
        return self.registry.get_version(info.version)

    def _record_registration(self, version: str, lineage: dict, metrics: dict, repaired: str | None = None) -> None:
        evidence = {"lineage": lineage, "metrics": metrics, "stage": "candidate"}
        self.ledger.append(
            "registration",
            subject={"model": self.model, "version": version},
            evidence={**evidence, "repaired": repaired} if repaired else evidence,
            actor=self.actor,
        )

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

    # --- gate, approval and the champion ---------------------------------------------------------

    def record_gate(self, result: GateResult, evidence: dict[str, object]) -> Entry:
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
        return entry

    def approve(self, ref: str, *, reason: str) -> Entry:
        """Approve a version for production traffic (stage=prod, alias challenger): needs a current gate pass."""
        version = self.resolve(ref)
        self._fault_allowed(version, "approve")
        self._lineage_ok(version, "approve")
        gate = self.state().gates.get(version)
        return self._compare_and_append(
            "approval",
            version,
            {"stage": "prod", "reason": reason, "gate_seq": gate.seq if gate else None},
            lambda state: approval_refusal(state, version),
            request={"gate_seq": gate.seq if gate else None, "reason": reason},
            in_force=lambda state, done: state.approvals.get(version) == done,
            what="approve",
        )

    def set_champion(
        self, ref: str, *, expected: str | None, reason: str, cause: str = "manual", evidence: dict | None = None
    ) -> Entry:
        """Move the champion from ``expected`` to a stage=prod version (audited; refused if it moved meanwhile)."""
        version = ref if cause in ("rollout", "rollback") else self.resolve(ref)  # no registry needed for these
        self._fault_allowed(version, "make champion")
        if cause == "manual":
            self._lineage_ok(version, "make champion")
        kind = "initial_deployment" if cause == "initial_deployment" else "champion_change"
        return self._compare_and_append(
            kind,
            version,
            {"previous_champion": expected, "cause": cause, "reason": reason, **(evidence or {})},
            lambda state: champion_refusal(state, version, expected, cause),
            request={"expected": expected, "cause": cause, "reason": reason},
            in_force=lambda state, done: state.champion == version and state.champion_by == done,
            what="make champion",
        )

    def retire(self, ref: str, *, reason: str) -> Entry:
        """Archive a stage=prod version as ``retired`` (neither champion nor challenger); reinstate undoes it."""
        version = self.resolve(ref)
        return self._compare_and_append(
            "archive",
            version,
            {"archived": "retired", "reason": reason},
            lambda state: retire_refusal(state, version),
            request={},
            in_force=lambda state, done: state.archived.get(version) == "retired",
            what="retire",
        )

    def reinstate(self, ref: str, *, reason: str) -> Entry:
        """Return a ``retired`` version to stage=prod (never a rolled-back or faulty one)."""
        version = self.resolve(ref)
        self._fault_allowed(version, "reinstate")
        self._lineage_ok(version, "reinstate")
        return self._compare_and_append(
            "reinstatement",
            version,
            {"stage": "prod", "reason": reason},
            lambda state: reinstate_refusal(state, version),
            request={},
            in_force=lambda state, done: state.stage(version) == "prod",
            what="reinstate",
        )

    def _fault_allowed(self, version: str, what: str) -> None:
        """A fault model (lineage ``fault``, recorded at registration) takes production roles (stage=prod,
        champion) only under the rollout profiles ``demo`` and ``test``; read from the ledger alone."""
        lineage = self.registration(version) or {}
        profile = get_settings().rollout_profile
        if lineage.get("fault") and profile not in FAULT_PROFILES:
            raise PromotionError(
                f"cannot {what} v{version}: it is a fault model (fault: {lineage['fault']}, built from "
                f"v{lineage.get('fault_from', '?')}), allowed only under rollout profile "
                f"{' or '.join(FAULT_PROFILES)}, and NEROPS_ROLLOUT_PROFILE is {profile!r}"
            )

    def _lineage_ok(self, version: str, what: str) -> None:
        try:
            self.verify_lineage(version)
        except LineageError as exc:
            raise PromotionError(f"cannot {what} v{version}: {exc}") from exc

    def _compare_and_append(
        self,
        kind: str,
        version: str,
        evidence: dict,
        refuse: Callable[[ModelState], Refusal | None],
        *,
        request: dict,
        in_force: Callable[[ModelState, Ref], bool],
        what: str,
    ) -> Entry:
        """Append ``kind`` if ``refuse`` finds nothing against it in the ledger's state inside the lock."""
        key = request_key(kind, self.model, version, request)

        def check(entries: list[Entry]) -> Entry | None:
            state = replay(e for e in entries if e.subject.get("model") == self.model)
            done = state.requests.get(key)
            if done is not None and in_force(state, done):
                return next(e for e in entries if e.seq == done.seq)  # a retry: the entry already written
            refusal = refuse(state)
            if refusal is not None:
                error = ConflictError if refusal.conflict else PromotionError
                raise error(f"cannot {what} v{version}: {refusal.message}")
            return None

        subject = {"model": self.model, "version": version}
        entry = self.ledger.append(
            kind, subject=subject, evidence={**evidence, "request": key}, actor=self.actor, check=check
        )
        try:
            self.apply(self.state(), [version])
        except (TransientBackendError, RegistryError) as exc:
            raise TransientBackendError(
                f"recorded in ledger entry {entry.seq}, but the registry was not updated ({exc}); "
                "a retry (or `nerops reconcile`) applies it"
            ) from exc
        return entry

    def apply(self, state: ModelState, versions: list[str]) -> list[str]:
        """Make the registry's stage tags and aliases show the ledger's state; return what changed."""
        from nerops.reconcile import apply_state

        return apply_state(self, state, versions)

    # --- verify and reconcile (nerops.reconcile) ------------------------------------------------

    def verify(self, *, catch_up: bool = False):
        from nerops.reconcile import verify

        return verify(self, catch_up=catch_up)

    def reconcile(self) -> list[str]:
        from nerops.reconcile import reconcile

        return reconcile(self)


def request_key(kind: str, model: str, version: str, request: dict) -> str:
    """Names one request, so a retry with the same inputs finds the entry it already wrote."""
    body = json.dumps({"kind": kind, "model": model, "version": version, **request}, sort_keys=True)
    return hashlib.sha256(body.encode()).hexdigest()[:24]
