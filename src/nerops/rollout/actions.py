"""What the state machine asks the flow to do (plain values, in order), and the manual verbs it accepts.

SetTraffic(weight, mirror, mirror_to)   the candidate's % of live traffic; % mirrored, and to whom
Scale(deployment, instances)            0: scale the deployment down (the way back ends with it)
Smoke(requests)                         send readiness requests pinned to the candidate (class smoke)
Record(kind, summary)                   a decision for the ledger and the evidence file
TagVersion(version, stage, reason)      e.g. archived / rolled_back
SetChampion(version)                    the rollout completed: move the alias
RetireDeployment(deployment)            the old deployment, after the bake
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal


@dataclass(frozen=True)
class SetTraffic:
    weight: int
    mirror: int
    mirror_to: Literal["candidate", "stable"] | None


@dataclass(frozen=True)
class Scale:
    deployment: str
    instances: int


@dataclass(frozen=True)
class Smoke:
    requests: int


@dataclass(frozen=True)
class Record:
    kind: str
    summary: str


@dataclass(frozen=True)
class TagVersion:
    version: str
    stage: str
    reason: str


@dataclass(frozen=True)
class SetChampion:
    version: str


@dataclass(frozen=True)
class RetireDeployment:
    deployment: str


Action = SetTraffic | Scale | Smoke | Record | TagVersion | SetChampion | RetireDeployment
KINDS = {cls.__name__: cls for cls in (SetTraffic, Scale, Smoke, Record, TagVersion, SetChampion, RetireDeployment)}


def action_to_dict(action: Action) -> dict:
    """An action as plain values (the rollout record keeps the actions of its last step until they are done)."""
    return {"action": type(action).__name__, **asdict(action)}


def action_from_dict(data: dict) -> Action:
    fields = dict(data)
    return KINDS[fields.pop("action")](**fields)


@dataclass(frozen=True)
class Command:
    """A manual verb: ``pause``, ``resume``, ``promote``, ``approve``, ``abort`` or ``rollback``, with who and why."""

    verb: Literal["pause", "resume", "promote", "approve", "abort", "rollback"]
    actor: str
    reason: str
    indefinitely: bool = False  # pause without a deadline (needs a reason)
    full: bool = False  # promote: skip every remaining step

    def __post_init__(self) -> None:
        if not self.reason.strip():
            raise ValueError(f"'{self.verb}' needs a reason: it is recorded in the ledger")
