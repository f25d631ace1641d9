"""``nerops status``: the on-call screen. What is live, champion and challenger, a running rollout, and disagreements.

Three sources are read and compared: the ledger (the source of truth for decisions), the registry (stage
tags and aliases, a view of the ledger) and the production endpoint's saved state (what actually takes
traffic; ``champion`` means what its stable deployment serves). A source that cannot be read is itself
reported: an unreachable registry is never read as "no champion".
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from nerops.errors import NeropsError
from nerops.live_at import live_at


@dataclass
class Status:
    model: str
    endpoint: str
    champion: str | None
    challenger: str | None
    rollout: dict | None
    deployments: list[dict] = field(default_factory=list)
    disagreements: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def describe(self) -> str:
        lines = [
            f"{self.model} on endpoint {self.endpoint}",
            f"  champion   {_v(self.champion)}",
            f"  challenger {_v(self.challenger)}",
            f"  rollout    {self._rollout()}",
        ]
        lines.append("  deployments:" if self.deployments else "  deployments: none")
        for d in self.deployments:
            lines.append(f"    {d['name']:<16} v{d['version']:<4} weight {d['weight']:>3} %  mirror {d['mirror']:>2} %")
        lines.append(
            "  disagreements:" if self.disagreements else "  disagreements: none (registry, ledger and endpoint agree)"
        )
        lines += [f"    - {d}" for d in self.disagreements]
        return "\n".join(lines)

    def _rollout(self) -> str:
        return f"v{self.rollout['version']} running since {self.rollout['since']}" if self.rollout else "none running"


def _v(version: str | None) -> str:
    return f"v{version}" if version else "none"


def read_endpoint(state_dir: Path, name: str) -> dict | None:
    """The local endpoint's saved state (deployments, traffic, mirror), or None if it never ran here."""
    path = state_dir / "endpoints" / name / "endpoint.json"
    return json.loads(path.read_text()) if path.exists() else None


def collect(gov, endpoint_name: str, endpoint: dict | None, *, now: datetime | None = None) -> Status:
    """Compare ledger, registry and endpoint state; every difference becomes one sentence."""
    state = gov.state()
    rollout = {"version": state.rollout[0], "since": state.rollout[1].time} if state.rollout else None
    status = Status(gov.model, endpoint_name, state.champion, state.challenger, rollout)
    ledger_view = live_at(gov.ledger.entries(), now or datetime.now(UTC), model=gov.model)
    expected = {d.deployment: d for d in ledger_view.deployments if d.endpoint == endpoint_name}
    _registry(gov, state, status)
    if endpoint is None:
        if state.champion:
            status.disagreements.append(
                f"the ledger's champion is v{state.champion} but endpoint {endpoint_name} has never run here"
            )
        return status
    traffic, mirror = endpoint.get("traffic", {}), endpoint.get("mirror", {})
    for name, spec in sorted(endpoint.get("deployments", {}).items()):
        version = str(spec["model_version"])
        status.deployments.append(
            {"name": name, "version": version, "weight": traffic.get(name, 0), "mirror": mirror.get(name, 0)}
        )
        want = expected.get(name)
        if want is None:
            status.disagreements.append(f"deployment {name} (v{version}) is on the endpoint but not in the ledger")
        elif (want.version, want.weight, want.mirror) != (version, traffic.get(name, 0), mirror.get(name, 0)):
            status.disagreements.append(
                f"deployment {name}: the endpoint has v{version} at {traffic.get(name, 0)} % "
                f"(mirror {mirror.get(name, 0)} %), "
                f"the ledger v{want.version} at {want.weight} % (mirror {want.mirror} %)"
            )
    for name in sorted(set(expected) - set(endpoint.get("deployments", {}))):
        status.disagreements.append(f"deployment {name} is in the ledger but not on the endpoint")
    _stable(state, status)
    return status


def _registry(gov, state, status: Status) -> None:
    from nerops.reconcile import drift

    try:
        status.disagreements += [f"registry: {d}" for d in drift(gov, gov.registry.list_versions())]
    except NeropsError as exc:
        status.disagreements.append(f"the registry cannot be read, so its tags and aliases are unchecked: {exc}")


def _stable(state, status: Status) -> None:
    """The stable deployment (the one with the most traffic) must serve the champion."""
    live = [d for d in status.deployments if d["weight"] > 0]
    if not live:
        if state.champion:
            status.disagreements.append(f"the champion is v{state.champion} but no deployment takes traffic")
        return
    stable = max(live, key=lambda d: (d["weight"], d["name"]))
    if state.champion is None:
        status.disagreements.append(
            f"deployment {stable['name']} serves v{stable['version']} but the ledger has no champion"
        )
    elif stable["version"] != state.champion:
        status.disagreements.append(
            f"the stable deployment {stable['name']} serves v{stable['version']}, but the champion is v{state.champion}"
        )
