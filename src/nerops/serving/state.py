"""An online endpoint's desired state and Azure ML's rules for changing it. Pure: no I/O.

An endpoint holds deployments (each serves one registry version); ``traffic`` maps deployment
names to integer weights that sum to 100 (or is empty while nothing takes traffic);
``mirror`` copies a share of live requests to deployments that take no live traffic (their
answers are discarded but measured; at most 50 % in all). Every change is a full new object,
validated as a whole, as with an Azure ML endpoint PUT.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace

from nerops.errors import NeropsError

MAX_MIRROR_PERCENT = 50


class EndpointRuleError(NeropsError):
    """A requested endpoint change breaks a rule (weights, unknown names, deleting a live deployment)."""


@dataclass(frozen=True)
class DeploymentSpec:
    name: str
    model: str  # "models:/<registered model>/<version>"
    model_version: str
    instance_count: int = 1
    environment_variables: dict[str, str] = field(default_factory=dict)  # as on an Azure ML deployment


@dataclass(frozen=True)
class EndpointState:
    name: str
    deployments: dict[str, DeploymentSpec] = field(default_factory=dict)
    traffic: dict[str, int] = field(default_factory=dict)
    mirror: dict[str, int] = field(default_factory=dict)

    def etag(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "deployments": {name: asdict(spec) for name, spec in sorted(self.deployments.items())},
            "traffic": dict(sorted(self.traffic.items())),
            "mirror": dict(sorted(self.mirror.items())),
        }

    @classmethod
    def from_dict(cls, data: dict) -> EndpointState:
        return cls(
            name=data["name"],
            deployments={name: DeploymentSpec(**spec) for name, spec in data.get("deployments", {}).items()},
            traffic={k: int(v) for k, v in data.get("traffic", {}).items()},
            mirror={k: int(v) for k, v in data.get("mirror", {}).items()},
        )


def check_name(name: str) -> str:
    if not (3 <= len(name) <= 32 and name[0].isalpha() and all(c.isalnum() or c == "-" for c in name)):
        raise EndpointRuleError(
            f"deployment name {name!r}: 3-32 characters, letters, digits and '-', starting with a letter"
        )
    return name


def with_deployment(state: EndpointState, spec: DeploymentSpec) -> EndpointState:
    """Add or replace a deployment; a new one starts with no traffic."""
    check_name(spec.name)
    if spec.instance_count < 1:
        raise EndpointRuleError(f"deployment {spec.name!r}: instance_count must be at least 1")
    return replace(state, deployments={**state.deployments, spec.name: spec})


def without_deployment(state: EndpointState, name: str) -> EndpointState:
    """Remove a deployment; refused while it takes live or mirrored traffic (as Azure ML does)."""
    if name not in state.deployments:
        raise EndpointRuleError(
            f"no deployment named {name!r} (have: {', '.join(sorted(state.deployments)) or 'none'})"
        )
    if state.traffic.get(name, 0) or state.mirror.get(name, 0):
        raise EndpointRuleError(
            f"deployment {name!r} still takes traffic ({state.traffic.get(name, 0)} % live, "
            f"{state.mirror.get(name, 0)} % mirrored): move its traffic first"
        )
    deployments = {k: v for k, v in state.deployments.items() if k != name}
    traffic = {k: v for k, v in state.traffic.items() if k != name}
    mirror = {k: v for k, v in state.mirror.items() if k != name}
    return replace(state, deployments=deployments, traffic=traffic, mirror=mirror)


def with_traffic(state: EndpointState, traffic: dict[str, int], mirror: dict[str, int] | None = None) -> EndpointState:
    """Set live traffic (and optionally mirror traffic) as a whole, after checking every rule."""
    mirror = state.mirror if mirror is None else mirror
    traffic = _weights(traffic, "traffic", state)
    mirror = _weights(mirror, "mirror", state)
    total = sum(traffic.values())
    if traffic and total != 100:
        raise EndpointRuleError(f"traffic weights must sum to 100, not {total}: {traffic}")
    if sum(mirror.values()) > MAX_MIRROR_PERCENT:
        raise EndpointRuleError(f"mirror traffic may total at most {MAX_MIRROR_PERCENT} %, not {sum(mirror.values())}")
    both = sorted(name for name, share in mirror.items() if share and traffic.get(name, 0))
    if both:
        raise EndpointRuleError(f"{', '.join(both)}: a deployment takes either live or mirrored traffic, not both")
    if mirror and any(mirror.values()) and not traffic:
        raise EndpointRuleError("mirror traffic needs live traffic to copy")
    return replace(state, traffic=traffic, mirror=mirror)


def _weights(weights: dict[str, int], what: str, state: EndpointState) -> dict[str, int]:
    out = {}
    for name, share in weights.items():
        if name not in state.deployments:
            known = ", ".join(sorted(state.deployments)) or "none"
            raise EndpointRuleError(f"{what} names unknown deployment {name!r} (have: {known})")
        if isinstance(share, bool) or not isinstance(share, int) or not 0 <= share <= 100:
            raise EndpointRuleError(f"{what} weight of {name!r} must be an integer from 0 to 100, not {share!r}")
        if share:
            out[name] = share
    return out


class WeightedPicker:
    """Smooth weighted round-robin (as nginx does): exact shares, evenly interleaved, no randomness."""

    def __init__(self, weights: dict[str, int]) -> None:
        self.weights = {name: share for name, share in sorted(weights.items()) if share > 0}
        self._current = dict.fromkeys(self.weights, 0)
        self._total = sum(self.weights.values())

    def pick(self) -> str | None:
        if not self.weights:
            return None
        for name, share in self.weights.items():
            self._current[name] += share
        chosen = max(self._current, key=lambda name: self._current[name])
        self._current[chosen] -= self._total
        return chosen


class MirrorPicker:
    """For each live request, which deployments get a copy: each at exactly its share over time."""

    def __init__(self, mirror: dict[str, int]) -> None:
        self.mirror = {name: share for name, share in sorted(mirror.items()) if share > 0}
        self._credit = dict.fromkeys(self.mirror, 0)

    def pick(self) -> list[str]:
        chosen = []
        for name, share in self.mirror.items():
            self._credit[name] += share
            if self._credit[name] >= 100:
                self._credit[name] -= 100
                chosen.append(name)
        return chosen
