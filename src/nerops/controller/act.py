"""Carrying out the state machine's actions, in the order it gives them, on the endpoint and the ledger.

    SetTraffic        read the endpoint (ETag), write traffic and mirror with If-Match, read back and verify
    Scale             the candidate's instances (0: delete it once it takes no traffic)
    Record            a ``rollout_decision`` ledger entry with the evidence file's sha256 and line count
    TagVersion        a ``rollback`` ledger entry (the version archived as rolled_back), then the registry tag
    SetChampion       ``champion_change`` with cause ``rollout`` (compare-and-append on the champion seen at start)
    RetireDeployment  delete the old deployment once it takes no traffic

Each is idempotent: a resumed run that repeats an action finds it done (a decision entry by its key:
rollout, evidence line, kind). A registry that is down does not
stop a rollback: the ledger is written and the registry catches up (``nerops reconcile``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nerops.controller import evidence
from nerops.controller.ownership import once, subject
from nerops.controller.records import RecordStore, RolloutRecord
from nerops.errors import ConflictError, RegistryError, TransientBackendError
from nerops.governance import Governance
from nerops.ledger import Entry
from nerops.rollout.actions import Action, Record, RetireDeployment, Scale, SetChampion, SetTraffic, TagVersion
from nerops.serving.client import EndpointError
from nerops.serving.port import Change, EndpointControl

log = logging.getLogger("nerops.controller")


@dataclass
class Executor:
    control: EndpointControl
    gov: Governance
    store: RecordStore
    record: RolloutRecord
    reason: str = ""

    @property
    def change(self) -> Change:
        """Who and why, as the endpoint's change headers take them (printable, at most 200 characters)."""
        why = " ".join((self.reason or f"rollout {self.record.rollout_id}").split())
        why = "".join(c if c.isprintable() and ord(c) < 127 else "?" for c in why)
        return Change(self.record.owner, why[:200].strip(), self.record.rollout_id)

    def run(self, actions: tuple[Action, ...]) -> list[str]:
        """Carry out ``actions`` in order; return one line per action, for the run's log."""
        done = []
        for action in actions:
            if isinstance(action, Record):
                self.reason = action.summary[:300]
            done.append(self.apply(action))
        return [line for line in done if line]

    def apply(self, action: Action) -> str:
        if isinstance(action, SetTraffic):
            return self.set_traffic(action)
        if isinstance(action, Scale):
            return self.scale(action)
        if isinstance(action, Record):
            entry = self.decision(action)
            return f"ledger entry {entry.seq}: {action.kind}"
        if isinstance(action, TagVersion):
            return self.archive(action)
        if isinstance(action, SetChampion):
            return self.champion(action)
        if isinstance(action, RetireDeployment):
            return self.delete(action.deployment, "retired after the bake")
        return ""  # Smoke: sent by the look itself

    def wanted(self, action: SetTraffic, deployments: list[str]) -> tuple[dict[str, int], dict[str, int]]:
        r = self.record
        traffic = {name: 0 for name in deployments}
        if r.stable:
            traffic[r.stable] = 100 - action.weight
        traffic[r.candidate] = action.weight if r.stable else 100
        target = {"candidate": r.candidate, "stable": r.stable}.get(action.mirror_to or "")
        mirror = {target: action.mirror} if target and action.mirror else {}
        return {k: v for k, v in traffic.items() if k in deployments or v}, mirror

    def set_traffic(self, action: SetTraffic) -> str:
        view = self.control.read()
        deployments = list(view.state.get("deployments", {}))
        traffic, mirror = self.wanted(action, deployments)
        now_traffic = {k: v for k, v in view.state.get("traffic", {}).items() if v}
        now_mirror = {k: v for k, v in view.state.get("mirror", {}).items() if v}
        if now_traffic == {k: v for k, v in traffic.items() if v} and now_mirror == mirror:
            return f"traffic already {traffic}, mirror {mirror}"
        self.control.set_traffic(traffic, mirror, if_match=view.etag, change=self.change)
        after = self.control.read().state
        if {k: v for k, v in after.get("traffic", {}).items() if v} != {k: v for k, v in traffic.items() if v}:
            raise ConflictError(f"traffic was set to {traffic} but the endpoint reads {after.get('traffic')}")
        return f"traffic {traffic}, mirror {mirror}"

    def scale(self, action: Scale) -> str:
        deployments = self.control.read().state.get("deployments", {})
        if action.deployment not in deployments:
            return ""
        if action.instances == 0:
            return self.delete(action.deployment, "scaled down after the rollout ended")
        current = deployments[action.deployment].get("instance_count")
        scale = getattr(self.control, "scale_deployment", None)
        if current == action.instances or scale is None:
            return ""
        scale(action.deployment, action.instances, change=self.change)
        return f"{action.deployment}: {current} -> {action.instances} instances"

    def delete(self, deployment: str, why: str) -> str:
        return delete_deployment(self.control, deployment, Change(self.record.owner, why, self.record.rollout_id))

    def decision(self, action: Record) -> Entry:
        lines, sha = evidence.digest(self.store.evidence_path(self.record))
        machine = self.record.state
        key = f"{self.record.rollout_id}:{self.record.evidence_lines}:{action.kind}"  # a successor's redo: once

        def check(entries: list[Entry]) -> Entry | None:
            done = (e for e in reversed(entries) if e.kind == "rollout_decision" and e.evidence.get("key") == key)
            return next(done, None)

        return self.gov.ledger.append(
            "rollout_decision",
            subject=subject(self.record),
            evidence={
                "decision": action.kind,
                "summary": action.summary,
                "phase": machine.get("phase"),
                "step": machine.get("step"),
                "weight": machine.get("weight"),
                "evidence_lines": lines,
                "evidence_sha256": sha,
                "key": key,
            },
            actor=self.record.owner,
            check=check,
        )

    def archive(self, action: TagVersion) -> str:
        lines, sha = evidence.digest(self.store.evidence_path(self.record))
        entry = self.gov.ledger.append(
            "rollback",
            subject=subject(self.record),
            evidence={
                "archived": action.reason,
                "to_version": self.record.stable_version,
                "reason": self.reason,
                "evidence_lines": lines,
                "evidence_sha256": sha,
            },
            actor=self.record.owner,
            check=once("rollback", self.record.rollout_id),
        )
        self._registry_catch_up(action.version)
        return f"ledger entry {entry.seq}: v{action.version} archived ({action.reason})"

    def champion(self, action: SetChampion) -> str:
        if self.gov.state().champion == action.version:
            return f"v{action.version} is champion already"
        try:
            entry = self.gov.set_champion(
                action.version,
                expected=self.record.stable_version,
                cause="rollout",
                reason=self.reason,
                evidence={"rollout": self.record.rollout_id},
            )
        except TransientBackendError as exc:  # the ledger holds it; the registry catches up later
            log.warning("champion v%s recorded, registry behind: %s", action.version, exc)
            return f"v{action.version} champion (registry behind: {exc})"
        return f"ledger entry {entry.seq}: v{action.version} champion"

    def _registry_catch_up(self, version: str) -> None:
        try:
            self.gov.apply(self.gov.state(), [version])
        except (TransientBackendError, RegistryError, OSError) as exc:
            log.warning("v%s: the registry is behind the ledger (%s); nerops reconcile applies it", version, exc)


def delete_deployment(control: EndpointControl, deployment: str, change: Change) -> str:
    """Delete a deployment that takes no traffic (nothing to do if it is gone); refused while it takes traffic."""
    state = control.read().state
    if deployment not in state.get("deployments", {}):
        return ""
    if state.get("traffic", {}).get(deployment) or state.get("mirror", {}).get(deployment):
        raise ConflictError(f"deployment {deployment!r} still takes traffic: not deleting it")
    try:
        control.delete_deployment(deployment, change=change)
    except EndpointError as exc:
        if exc.status != 404:
            raise
    return f"deleted deployment {deployment} ({change.reason})"
