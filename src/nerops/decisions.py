"""The approval/champion state machine over ledger kinds. Pure: plain data in, plain data out; no I/O, no clock.

A version's ``stage`` and the aliases are replayed from the ledger's entries of one registered model::

    registration ──▶ candidate ──approval (a current gate pass)──▶ prod + challenger
                                                                      │
        champion_change (rollout done / manual) · initial_deployment ─┴─▶ champion (challenger cleared)
    prod ──archive(retired)──▶ archived ──reinstatement──▶ prod       (rolled_back / fault: never back)
    rollback: the rolled-back version ──▶ archived(rolled_back); champion back to the version named

Old ``promotion`` entries replay as an approval plus a champion change. ``rollout_started`` and
``rollout_finished`` (written by the rollout controller) mark a running rollout: while the challenger
is being rolled out a newer approval is refused.

The ``*_refusal`` functions are the preconditions of compare-and-append: given the state replayed
inside the ledger lock they return ``None`` (go ahead) or a :class:`Refusal` whose message names what
changed ("champion moved from 3 to 4 at ..."); ``conflict`` marks a competing change rather than a rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

ARCHIVE_REASONS = ("rolled_back", "fault", "retired")
CHAMPION_KINDS = frozenset({"champion_change", "initial_deployment", "promotion", "rollback"})
CAUSES = ("rollout", "rollback", "manual", "initial_deployment")


class Record(Protocol):
    """What the state machine reads of a ledger entry (``nerops.ledger.Entry`` is one)."""

    seq: int
    time: str
    actor: str
    kind: str
    subject: dict
    evidence: dict


@dataclass(frozen=True)
class Ref:
    """Which entry did something: enough to name it in a message."""

    seq: int
    time: str
    actor: str
    kind: str

    @classmethod
    def of(cls, entry: Record) -> Ref:
        return cls(entry.seq, entry.time, entry.actor, entry.kind)

    def words(self) -> str:
        return f"{self.time} (ledger entry {self.seq}, {self.kind} by {self.actor})"


@dataclass(frozen=True)
class ModelState:
    stages: Mapping[str, str] = field(default_factory=dict)
    archived: Mapping[str, str] = field(default_factory=dict)  # version -> rolled_back / fault / retired
    champion: str | None = None
    champion_by: Ref | None = None
    challenger: str | None = None
    challenger_by: Ref | None = None
    approvals: Mapping[str, Ref] = field(default_factory=dict)  # version -> the entry that approved it last
    gates: Mapping[str, Ref] = field(default_factory=dict)  # version -> its last gate entry
    gate_results: Mapping[str, tuple[str, str | None]] = field(default_factory=dict)  # verdict, champion then
    rollout: tuple[str, Ref] | None = None  # (version, rollout_started entry)
    requests: Mapping[str, Ref] = field(default_factory=dict)  # evidence "request" key -> entry

    def stage(self, version: str) -> str | None:
        return self.stages.get(str(version))


@dataclass(frozen=True)
class Refusal:
    message: str
    conflict: bool = False


def archive_reason(evidence: Mapping) -> str:
    """The archive reason of an entry; old free-text archive entries (repairs of orphans) count as a fault."""
    reason = evidence.get("archived")
    return reason if reason in ARCHIVE_REASONS else "fault"


def replay(entries: Iterable[Record]) -> ModelState:
    """The state after ``entries`` (one registered model's, in ledger order)."""
    state = ModelState()
    for entry in entries:
        state = step(state, entry)
    return state


def step(state: ModelState, entry: Record) -> ModelState:
    """One entry's effect; kinds the state machine does not know (training, traffic) change nothing."""
    version = str(entry.subject.get("version", ""))
    ref = Ref.of(entry)
    stages, archived = dict(state.stages), dict(state.archived)
    if isinstance(entry.evidence.get("request"), str):
        state = replace(state, requests={**state.requests, entry.evidence["request"]: ref})
    kind = entry.kind
    if kind == "registration":
        stages.setdefault(version, "candidate")
        return replace(state, stages=stages)
    if kind == "gate":
        result = (str(entry.evidence.get("verdict")), entry.evidence.get("champion_version"))
        return replace(state, gates={**state.gates, version: ref}, gate_results={**state.gate_results, version: result})
    if kind in ("approval", "promotion"):
        stages[version] = "prod"
        archived.pop(version, None)
        state = replace(state, stages=stages, archived=archived, approvals={**state.approvals, version: ref})
        if kind == "approval":
            return replace(state, challenger=version, challenger_by=ref)
        return _champion(state, version, ref)
    if kind in ("champion_change", "initial_deployment"):
        return _champion(state, version, ref)
    if kind == "rollback":
        stages[version], archived[version] = "archived", "rolled_back"
        state = replace(state, stages=stages, archived=archived)
        back = entry.evidence.get("to_version")
        if state.champion == version and back:
            state = _champion(state, str(back), ref)
        return _end_rollout(_clear_challenger(state, version), version)
    if kind == "archive":
        stages[version], archived[version] = "archived", archive_reason(entry.evidence)
        return _clear_challenger(replace(state, stages=stages, archived=archived), version)
    if kind == "reinstatement":
        stages[version] = "prod"
        archived.pop(version, None)
        return replace(state, stages=stages, archived=archived)
    if kind == "rollout_started":
        return replace(state, rollout=(version, ref))
    if kind == "rollout_finished":
        return _end_rollout(state, version)
    return state


def _champion(state: ModelState, version: str, ref: Ref) -> ModelState:
    state = replace(state, champion=version, champion_by=ref)
    return _clear_challenger(state, version)


def _clear_challenger(state: ModelState, version: str) -> ModelState:
    return replace(state, challenger=None, challenger_by=None) if state.challenger == version else state


def _end_rollout(state: ModelState, version: str) -> ModelState:
    return replace(state, rollout=None) if state.rollout and state.rollout[0] == version else state


def _champion_words(state: ModelState) -> str:
    return f"v{state.champion}" if state.champion else "none"


# --- preconditions of compare-and-append ----------------------------------------------------------------------


def approval_refusal(state: ModelState, version: str) -> Refusal | None:
    """May ``version`` be approved (stage=prod, challenger) now? Needs a pass against the champion of this moment."""
    stage = state.stage(version)
    if stage is None:
        return Refusal(f"v{version} has no registration entry in the ledger")
    if stage == "archived":
        return Refusal(f"v{version} is archived ({state.archived.get(version)}): it cannot be approved")
    if state.champion == version:
        return Refusal(f"v{version} is already the champion")
    if version not in state.gates:
        return Refusal(f"v{version} has never been gated")
    verdict, against = state.gate_results[version]
    gate = state.gates[version]
    if verdict != "pass":
        return Refusal(f"v{version}'s last gate (ledger entry {gate.seq}) failed")
    if against != state.champion:
        moved = state.champion_by.words() if state.champion_by else "an unknown time"
        return Refusal(
            f"v{version} passed against champion {f'v{against}' if against else 'none'} (ledger entry {gate.seq}), "
            f"but the champion moved from {against or 'none'} to {state.champion or 'none'} at {moved}: gate it again",
            conflict=True,
        )
    if state.rollout and state.challenger and state.challenger != version and state.rollout[0] == state.challenger:
        return Refusal(
            f"a rollout of challenger v{state.challenger} is running (since {state.rollout[1].words()}): "
            f"v{version} cannot replace it until that rollout ends",
            conflict=True,
        )
    return None


def champion_refusal(state: ModelState, version: str, expected: str | None, cause: str) -> Refusal | None:
    """May the champion move to ``version`` now, from ``expected`` (the champion the caller saw)?"""
    if cause not in CAUSES:
        return Refusal(f"unknown cause {cause!r} of a champion change: one of {', '.join(CAUSES)}")
    stage = state.stage(version)
    if stage != "prod":
        what = f"stage={stage}" if stage else "not registered in the ledger"
        return Refusal(f"v{version} is {what}: only a stage=prod version can become champion")
    if state.champion != expected:
        moved = state.champion_by.words() if state.champion_by else "an unknown time"
        return Refusal(
            f"the champion moved from {expected or 'none'} to {state.champion or 'none'} at {moved}", conflict=True
        )
    if state.champion == version:
        return Refusal(f"v{version} is already the champion")
    if cause == "initial_deployment" and state.champion is not None:
        return Refusal(f"an initial deployment needs no champion, but v{state.champion} is champion")
    if state.rollout and cause in ("manual", "initial_deployment") and state.rollout[0] != version:
        return Refusal(
            f"a rollout of v{state.rollout[0]} is running (since {state.rollout[1].words()}): end it first",
            conflict=True,
        )
    return None


def reinstate_refusal(state: ModelState, version: str) -> Refusal | None:
    if state.stage(version) != "archived":
        return Refusal(f"v{version} is stage={state.stage(version)}, not archived: nothing to reinstate")
    reason = state.archived.get(version)
    if reason != "retired":
        return Refusal(f"v{version} was archived as {reason}: only a retired version can be reinstated")
    return None


def retire_refusal(state: ModelState, version: str) -> Refusal | None:
    if state.stage(version) != "prod":
        return Refusal(f"v{version} is stage={state.stage(version)}: only a stage=prod version can be retired")
    if version in (state.champion, state.challenger):
        role = "champion" if version == state.champion else "challenger"
        return Refusal(f"v{version} is the {role}: move the {role} first")
    return None
