"""The approval/champion state machine as tables: sequences of ledger kinds -> stages, champion, challenger."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from nerops.decisions import approval_refusal, champion_refusal, reinstate_refusal, replay, retire_refusal


@dataclass(frozen=True)
class E:
    """A ledger entry as the state machine reads it."""

    kind: str
    version: str
    evidence: dict = field(default_factory=dict)
    seq: int = 0
    time: str = ""
    actor: str = "alice@laptop"

    @property
    def subject(self) -> dict:
        return {"model": "resume-ner", "version": self.version}


def history(*steps: tuple) -> list[E]:
    """(kind, version[, evidence]) tuples into entries with seq and time."""
    return [
        E(step[0], step[1], step[2] if len(step) > 2 else {}, n, f"2026-11-26T07:{n:02d}:00.000000Z")
        for n, step in enumerate(steps, 1)
    ]


REG = [("registration", "1"), ("registration", "2"), ("registration", "3")]
PASS_NONE = {"verdict": "pass", "champion_version": None}
PASS_1 = {"verdict": "pass", "champion_version": "1"}
CHAMP = {"cause": "manual"}

# steps, stages of v1..v3, champion, challenger, archive reasons
TABLE = [
    ("registered only", REG, ("candidate", "candidate", "candidate"), None, None, {}),
    (
        "a gate pass approves: prod and challenger, the champion does not move",
        [*REG, ("gate", "1", PASS_NONE), ("approval", "1")],
        ("prod", "candidate", "candidate"),
        None,
        "1",
        {},
    ),
    (
        "an initial deployment makes the approved first model champion and clears the challenger",
        [*REG, ("gate", "1", PASS_NONE), ("approval", "1"), ("initial_deployment", "1")],
        ("prod", "candidate", "candidate"),
        "1",
        None,
        {},
    ),
    (
        "old promotion entries replay as approval plus champion change",
        [*REG, ("gate", "1", PASS_NONE), ("promotion", "1"), ("gate", "2", PASS_1), ("promotion", "2")],
        ("prod", "prod", "candidate"),
        "2",
        None,
        {},
    ),
    (
        "a newer approval moves the challenger; the old challenger stays prod",
        [*REG, ("promotion", "1"), ("approval", "2"), ("approval", "3")],
        ("prod", "prod", "prod"),
        "1",
        "3",
        {},
    ),
    (
        "a completed rollout moves the champion; the previous champion stays prod for a rollback",
        [*REG, ("promotion", "1"), ("approval", "2"), ("champion_change", "2", {"cause": "rollout"})],
        ("prod", "prod", "candidate"),
        "2",
        None,
        {},
    ),
    (
        "a rollback during a canary archives the challenger as rolled_back; the champion stays",
        [*REG, ("promotion", "1"), ("approval", "2"), ("rollout_started", "2"), ("rollback", "2", {"to_version": "1"})],
        ("prod", "archived", "candidate"),
        "1",
        None,
        {"2": "rolled_back"},
    ),
    (
        "a rollback after promotion brings the previous champion back",
        [*REG, ("promotion", "1"), ("approval", "2"), ("champion_change", "2"), ("rollback", "2", {"to_version": "1"})],
        ("prod", "archived", "candidate"),
        "1",
        None,
        {"2": "rolled_back"},
    ),
    (
        "retired, then reinstated",
        [
            *REG,
            ("promotion", "1"),
            ("approval", "2"),
            ("approval", "3"),
            ("archive", "2", {"archived": "retired"}),
            ("reinstatement", "2"),
        ],
        ("prod", "prod", "prod"),
        "1",
        "3",
        {},
    ),
    (
        "an old free-text archive (an orphan repair) counts as a fault; archiving the challenger clears it",
        [*REG, ("approval", "3"), ("archive", "3", {"reason": "orphan whose artifacts do not match"})],
        ("candidate", "candidate", "archived"),
        None,
        None,
        {"3": "fault"},
    ),
    (
        "kinds the state machine does not know change nothing: retiring a deployment does not archive its version",
        [*REG, ("promotion", "1"), ("traffic_change", "1"), ("training", "2"), ("deployment_deleted", "1")],
        ("prod", "candidate", "candidate"),
        "1",
        None,
        {},
    ),
]


@pytest.mark.parametrize(
    ("steps", "stages", "champion", "challenger", "archived"), [t[1:] for t in TABLE], ids=[t[0] for t in TABLE]
)
def test_replay(steps, stages, champion, challenger, archived):
    state = replay(history(*steps))
    assert tuple(state.stage(v) for v in ("1", "2", "3")) == stages
    assert (state.champion, state.challenger) == (champion, challenger)
    assert dict(state.archived) == archived


def test_the_entry_that_set_the_champion_is_named():
    state = replay(history(*REG, ("promotion", "1"), ("approval", "2"), ("champion_change", "2")))
    assert state.champion_by.seq == 6 and state.champion_by.kind == "champion_change"
    assert state.approvals["1"].kind == "promotion" and state.approvals["2"].seq == 5


APPROVAL_TABLE = [
    ("never gated", [*REG], "2", "v2 has never been gated"),
    ("failed gate", [*REG, ("gate", "2", {"verdict": "fail", "champion_version": None})], "2", "failed"),
    ("archived", [*REG, ("archive", "2", {"archived": "fault"})], "2", "archived (fault)"),
    ("unregistered", [], "2", "no registration entry"),
    ("already champion", [*REG, ("promotion", "2")], "2", "already the champion"),
    (
        "the champion moved since the gate",
        [*REG, ("gate", "2", PASS_NONE), ("approval", "1"), ("initial_deployment", "1")],
        "2",
        "the champion moved from none to 1 at 2026-11-26T07:06:00.000000Z (ledger entry 6, initial_deployment",
    ),
    (
        "a rollout of the current challenger is running",
        [*REG, ("promotion", "1"), ("approval", "2"), ("rollout_started", "2"), ("gate", "3", PASS_1)],
        "3",
        "a rollout of challenger v2 is running",
    ),
    ("a current pass", [*REG, ("promotion", "1"), ("gate", "2", PASS_1)], "2", None),
    (
        "after the rollout ended a newer pass may replace the challenger",
        [
            *REG,
            ("promotion", "1"),
            ("approval", "2"),
            ("rollout_started", "2"),
            ("rollout_finished", "2"),
            ("gate", "3", PASS_1),
        ],
        "3",
        None,
    ),
]


@pytest.mark.parametrize(
    ("steps", "version", "refused"), [t[1:] for t in APPROVAL_TABLE], ids=[t[0] for t in APPROVAL_TABLE]
)
def test_approval_preconditions(steps, version, refused):
    refusal = approval_refusal(replay(history(*steps)), version)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.message


CHAMPION_TABLE = [
    ("not prod", [*REG, ("promotion", "1")], "2", "1", "manual", "v2 is stage=candidate", False),
    (
        "moved meanwhile",
        [*REG, ("promotion", "1"), ("approval", "2"), ("champion_change", "2")],
        "2",
        "1",
        "manual",
        "the champion moved from 1 to 2 at 2026-11-26T07:06:00.000000Z (ledger entry 6",
        True,
    ),
    ("expected a champion, there is none", [*REG, ("approval", "1")], "1", "3", "manual", "moved from 3 to none", True),
    (
        "initial deployment with a champion",
        [*REG, ("promotion", "1"), ("approval", "2")],
        "2",
        "1",
        "initial_deployment",
        "needs no champion",
        False,
    ),
    (
        "manual change while a rollout runs",
        [*REG, ("promotion", "1"), ("approval", "2"), ("approval", "3"), ("rollout_started", "3")],
        "2",
        "1",
        "manual",
        "a rollout of v3 is running",
        True,
    ),
    (
        "a rollout completing",
        [*REG, ("promotion", "1"), ("approval", "2"), ("rollout_started", "2")],
        "2",
        "1",
        "rollout",
        None,
        False,
    ),
    ("first champion", [*REG, ("approval", "1")], "1", None, "initial_deployment", None, False),
    ("unknown cause", [*REG, ("approval", "1")], "1", None, "whim", "unknown cause", False),
]


@pytest.mark.parametrize(
    ("steps", "version", "expected", "cause", "refused", "conflict"),
    [t[1:] for t in CHAMPION_TABLE],
    ids=[t[0] for t in CHAMPION_TABLE],
)
def test_champion_preconditions(steps, version, expected, cause, refused, conflict):
    refusal = champion_refusal(replay(history(*steps)), version, expected, cause)
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.message and refusal.conflict is conflict


@pytest.mark.parametrize(
    ("archived", "refused"),
    [("retired", None), ("rolled_back", "archived as rolled_back"), ("fault", "archived as fault")],
)
def test_only_a_retired_version_is_reinstated(archived, refused):
    state = replay(history(*REG, ("promotion", "1"), ("approval", "2"), ("archive", "2", {"archived": archived})))
    refusal = reinstate_refusal(state, "2")
    if refused is None:
        assert refusal is None
    else:
        assert refusal is not None and refused in refusal.message


def test_the_champion_and_the_challenger_cannot_be_retired():
    state = replay(history(*REG, ("promotion", "1"), ("approval", "2"), ("approval", "3")))
    assert "is the champion" in retire_refusal(state, "1").message
    assert "is the challenger" in retire_refusal(state, "3").message
    assert retire_refusal(state, "2") is None
    assert "only a stage=prod version" in retire_refusal(state, "9").message
