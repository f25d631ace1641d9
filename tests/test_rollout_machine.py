"""The rollout state machine, by tables of verdict sequences: traffic history, phase, actions and deadlines."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nerops.rollout.actions import Command, Record, RetireDeployment, Scale, SetChampion, SetTraffic, TagVersion
from nerops.rollout.machine import advance, command, start, state_from_dict, state_to_dict
from nerops.rollout.plan import build_plan
from nerops.rollout.policy import load_policy
from nerops.rollout.verdicts import Verdict


@pytest.fixture(scope="module")
def plan():
    policy, _ = load_policy()
    return build_plan(policy, "production")


def verdict(status, now=0.0):
    return Verdict(status, f"scripted {status}", now, None, 60.0)


def run(plan, script, *, until=None, approval=False, state=None, now=0.0):
    """Look every interval; ``script(look_index, state) -> status``; stop when ended or at ``until``."""
    actions = ()
    if state is None:
        state, actions = start(
            plan, endpoint="ner", version="7", attempt=1, candidate="v7-1", stable="blue", now=0.0, approval=approval
        )
    log = list(actions)
    look = 0
    until = until or sum(s.deadline for s in plan.steps) + plan.interval
    while not state.ended and now < until:
        now += plan.interval
        state, actions = advance(plan, state, verdict(script(look, state), now), now)
        log += actions
        look += 1
    return state, log, now


def traffic(log):
    return [a.weight for a in log if isinstance(a, SetTraffic)]


def test_healthy_throughout_walks_every_step_and_promotes(plan):
    state, log, now = run(plan, lambda i, s: "healthy")
    assert state.phase == "promoted"
    assert list(state.weights) == [0, 5, 25, 50, 100]
    assert traffic(log) == [0, 5, 25, 50, 100, 100]
    assert now == pytest.approx(60 + 600 + 600 + 600 + 1200)  # readiness look, then each minimum bake
    assert isinstance(log[-2], SetChampion) and log[-2].version == "7"
    assert log[-1] == RetireDeployment("blue")
    assert [a.instances for a in log if isinstance(a, Scale)] == [1, 1, 1, 2, 2]  # full before 100 %


def test_unhealthy_at_25_rolls_back_at_once_and_archives_the_version(plan):
    state, log, now = run(plan, lambda i, s: "unhealthy" if s.weight == 25 and i > 14 else "healthy")
    assert state.phase == "rolled_back"
    assert list(state.weights) == [0, 5, 25, 0]
    assert "unhealthy: scripted unhealthy" in state.ending
    tail = log[-4:]  # traffic and mirror first, then evidence, then the tag, then scale down
    assert tail[0] == SetTraffic(0, 0, None)
    assert isinstance(tail[1], Record) and tail[1].kind == "rolled_back"
    assert tail[2] == TagVersion("7", "archived", "rolled_back")
    assert tail[3] == Scale("v7-1", 0)
    assert not any(isinstance(a, SetChampion) for a in log)


def test_no_data_extends_the_wait_then_aborts_at_the_deadline_and_keeps_the_version_prod(plan):
    state, log, now = run(plan, lambda i, s: "healthy" if i == 0 else "no_data")
    assert state.phase == "aborted"
    assert list(state.weights) == [0, 5, 0]
    assert now == pytest.approx(60 + 1800)  # the 5 % step's deadline, not its 10-minute wait
    assert "reached its deadline with verdict no_data" in state.ending
    assert not any(isinstance(a, TagVersion | SetChampion) for a in log)


def test_a_metrics_error_freezes_traffic_and_never_promotes(plan):
    state, log, now = run(plan, lambda i, s: "healthy" if i < 12 else "error")
    assert state.phase == "aborted" and list(state.weights) == [0, 5, 25, 0]
    frozen = [a for a in log if isinstance(a, Record) and a.kind == "frozen"]
    assert len(frozen) == 1 and "traffic frozen at 25 %" in frozen[0].summary
    assert not any(isinstance(a, SetChampion) for a in log)


def test_an_error_that_clears_unfreezes_and_the_rollout_goes_on(plan):
    state, log, now = run(plan, lambda i, s: "error" if 3 <= i < 6 else "healthy")
    assert state.phase == "promoted"
    kinds = [a.kind for a in log if isinstance(a, Record)]
    assert kinds.count("frozen") == 1 and kinds.count("unfrozen") == 1


def test_inconclusive_and_healthy_before_the_wait_do_not_advance(plan):
    state, _, now = run(plan, lambda i, s: "healthy" if i == 0 else "inconclusive", until=60 + 540)
    assert state.phase == "progressing" and state.weight == 5 and state.frozen is None


def test_on_deadline_rollback_archives_like_an_unhealthy_verdict():
    policy, _ = load_policy()
    profile = policy.profiles["production"]
    steps = [s.model_copy(update={"on_deadline": "rollback"}) for s in profile.steps]
    production = profile.model_copy(update={"steps": steps})
    changed = policy.model_copy(update={"profiles": {**policy.profiles, "production": production}})
    plan = build_plan(changed, "production")
    state, log, _ = run(plan, lambda i, s: "healthy" if i == 0 else "no_data")
    assert state.phase == "rolled_back" and TagVersion("7", "archived", "rolled_back") in log


def test_a_resumed_run_keeps_the_absolute_deadlines(plan):
    state, _, now = run(plan, lambda i, s: "healthy" if i == 0 else "no_data", until=60 + 300)
    saved = json.loads(json.dumps(state_to_dict(state)))
    resumed = state_from_dict(saved)
    assert resumed == state
    later = state.deadline - 1
    again, _ = advance(plan, resumed, verdict("no_data"), later)
    assert again.deadline == state.deadline and again.phase == "progressing"
    ended, _ = advance(plan, again, verdict("no_data"), state.deadline)
    assert ended.phase == "aborted"


def test_pause_freezes_traffic_unhealthy_still_rolls_back_and_the_pause_has_a_deadline(plan):
    state, _, now = run(plan, lambda i, s: "healthy", until=60 + 600 + 120)
    paused, actions = command(plan, state, Command("pause", "ops@host", "looking at a dashboard"), now)
    assert paused.phase == "paused" and paused.pause_until == now + plan.pause.deadline
    held, _ = advance(plan, paused, verdict("healthy"), now + 1200)
    assert held.phase == "paused" and held.weight == paused.weight
    rolled, _ = advance(plan, held, verdict("unhealthy"), now + 1260)
    assert rolled.phase == "rolled_back"
    timed_out, _ = advance(plan, paused, verdict("healthy"), now + plan.pause.deadline)
    assert timed_out.phase == "aborted" and "pause reached its deadline" in timed_out.ending


def test_an_indefinite_pause_waits_and_resume_shifts_the_deadlines_by_the_time_paused(plan):
    state, _, now = run(plan, lambda i, s: "healthy", until=60 + 600 + 120)
    paused, _ = command(plan, state, Command("pause", "ops@host", "incident 42", indefinitely=True), now)
    held, _ = advance(plan, paused, verdict("no_data"), now + 10 * 3600)
    assert held.phase == "paused"
    resumed, actions = command(plan, held, Command("resume", "ops@host", "incident closed"), now + 10 * 3600)
    assert resumed.phase == "progressing" and resumed.deadline == state.deadline + 10 * 3600
    assert command(plan, resumed, Command("resume", "ops@host", "again"), now)[1] == ()  # idempotent


@pytest.mark.parametrize(("verb", "phase", "tagged"), [("rollback", "rolled_back", True), ("abort", "aborted", False)])
def test_manual_rollback_and_abort(plan, verb, phase, tagged):
    state, _, now = run(plan, lambda i, s: "healthy", until=60 + 600 + 120)
    ended, actions = command(plan, state, Command(verb, "ops@host", "customer report"), now)
    assert ended.phase == phase and list(ended.weights) == [0, 5, 25, 0]
    assert (TagVersion("7", "archived", "rolled_back") in actions) is tagged
    assert "ops@host: customer report" in ended.ending
    assert command(plan, ended, Command(verb, "ops@host", "again"), now) == (ended, ())  # idempotent


def test_manual_promote_moves_to_the_next_step_or_to_the_end(plan):
    state, _, now = run(plan, lambda i, s: "healthy", until=120)
    moved, _ = command(plan, state, Command("promote", "ops@host", "looks fine"), now)
    assert moved.weight == 25
    done, actions = command(plan, state, Command("promote", "ops@host", "hotfix", full=True), now)
    assert done.phase == "promoted" and SetChampion("7") in actions


def test_a_command_needs_a_reason():
    with pytest.raises(ValueError, match="needs a reason"):
        Command("abort", "ops@host", "  ")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["healthy", "inconclusive", "no_data", "error"]), min_size=1, max_size=400))
def test_every_wait_ends_by_its_deadline_whatever_the_verdicts(script):
    policy, _ = load_policy()
    plan = build_plan(policy, "production")
    state, log, now = run(plan, lambda i, s: script[i % len(script)])
    assert state.ended  # within the worst-case total
    assert now <= sum(s.deadline for s in plan.steps) + plan.interval
    assert state.phase in ("promoted", "aborted")  # never rolled back without an unhealthy verdict
    assert (state.phase == "promoted") == any(isinstance(a, SetChampion) for a in log)
    for span in state.steps:
        step = plan.steps[span.index]
        assert span.end is not None and span.end - span.start <= step.deadline + 1e-9


# The approval step (production: before the 100 % step, 4 h, then abort), by tables of what happens while it waits.

APPROVE = Command("approve", "lead@host", "change ticket 7 signed off")


def _waiting(plan):
    """A rollout with its approval step on, walked healthy to where it waits: (state, log, now)."""
    state, log, now = run(plan, lambda i, s: "healthy", approval=True, until=60 + 1800 + 60)
    assert state.phase == "awaiting_approval" and state.weight == 50 and list(state.weights) == [0, 5, 25, 50]
    waits = [a for a in log if isinstance(a, Record) and a.kind == "awaiting_approval"]
    assert len(waits) == 1 and "bake 100% waits for approval" in waits[0].summary and "then abort" in waits[0].summary
    return state, log, now


def test_with_approval_on_the_rollout_waits_before_100_and_an_approval_moves_it_on(plan):
    state, _, now = _waiting(plan)
    entered = state.approval_until - plan.approval.timeout
    assert entered == pytest.approx(60 + 600 * 3)  # at the end of the 50 % step's wait, on its healthy look
    held, _ = run(plan, lambda i, s: "healthy", state=state, now=now, until=now + 3600)[:2]
    assert held.phase == "awaiting_approval" and held.weight == 50  # healthy looks do not move it on
    moved, actions = command(plan, held, APPROVE, now + 3600)
    assert moved.phase == "progressing" and moved.weight == 100 and moved.approval.startswith("approve by lead@host")
    assert [a.kind for a in actions if isinstance(a, Record)] == ["approved", "step"]
    assert command(plan, moved, APPROVE, now + 3601) == (moved, ())  # idempotent: nothing waits any more
    done, _, _ = run(plan, lambda i, s: "healthy", state=moved, now=now + 3600)
    assert done.phase == "promoted" and list(done.weights) == [0, 5, 25, 50, 100]


@pytest.mark.parametrize(
    ("on_timeout", "phase", "weights"), [("abort", "aborted", [0, 5, 25, 50, 0]), ("continue", "promoted", None)]
)
def test_no_approval_by_the_timeout_takes_the_default_action(on_timeout, phase, weights):
    policy, _ = load_policy()
    profile = policy.profiles["production"]
    approval = profile.approval.model_copy(update={"on_timeout": on_timeout})
    changed = policy.model_copy(
        update={"profiles": {**policy.profiles, "production": profile.model_copy(update={"approval": approval})}}
    )
    plan = build_plan(changed, "production")
    state, _, now = run(plan, lambda i, s: "healthy", approval=True, until=8 * 3600)
    assert state.phase == phase
    if weights:
        assert list(state.weights) == weights and "no approval within 14400 s (default: abort)" in state.ending
    else:
        assert list(state.weights) == [0, 5, 25, 50, 100]


def test_an_unhealthy_verdict_while_waiting_for_approval_rolls_back_at_once(plan):
    state, _, now = _waiting(plan)
    rolled, actions = advance(plan, state, verdict("unhealthy"), now + 60)
    assert rolled.phase == "rolled_back" and rolled.weight == 0
    assert TagVersion("7", "archived", "rolled_back") in actions
    preempted, _ = command(plan, state, Command("rollback", "ops@host", "pager"), now + 60)
    assert preempted.phase == "rolled_back"  # a manual rollback preempts the wait too


def test_an_approval_given_ahead_of_its_step_and_a_promote_both_count(plan):
    state, _, now = run(plan, lambda i, s: "healthy", approval=True, until=120)
    assert state.approval == "required" and state.weight == 5
    ahead, actions = command(plan, state, APPROVE, now)
    assert ahead.weight == 5 and [a.kind for a in actions] == ["approved"]
    done, _, _ = run(plan, lambda i, s: "healthy", state=ahead, now=now)
    assert done.phase == "promoted"  # it never waited
    waiting, _, now = _waiting(plan)
    promoted, _ = command(plan, waiting, Command("promote", "lead@host", "approved in the meeting"), now)
    assert promoted.weight == 100 and promoted.approval.startswith("promote by lead@host")


def test_without_approval_asked_nothing_waits_and_approve_is_a_no_op(plan):
    state, _, now = run(plan, lambda i, s: "healthy", until=120)
    assert command(plan, state, APPROVE, now) == (state, ())
    assert run(plan, lambda i, s: "healthy")[0].phase == "promoted"


def test_approval_asked_of_a_profile_without_an_approval_step_is_refused():
    policy, _ = load_policy()
    bare = policy.profiles["production"].model_copy(update={"approval": None})
    plan = build_plan(policy.model_copy(update={"profiles": {**policy.profiles, "production": bare}}), "production")
    with pytest.raises(ValueError, match="has no approval step"):
        start(plan, endpoint="ner", version="7", attempt=1, candidate="v7-1", stable="blue", now=0.0, approval=True)


def test_a_required_approval_whose_step_left_the_policy_aborts_rather_than_goes_on(plan):
    policy, _ = load_policy()
    bare = policy.profiles["production"].model_copy(update={"approval": None})
    edited = build_plan(policy.model_copy(update={"profiles": {**policy.profiles, "production": bare}}), "production")
    state, _, now = run(plan, lambda i, s: "healthy", approval=True, until=120)  # required, at 5 %
    moved, _ = advance(edited, state, verdict("healthy"), state.wait_until)
    assert moved.phase == "aborted" and "policy no longer defines it" in moved.ending
    waiting, _, now = _waiting(plan)
    ended, _ = advance(edited, waiting, verdict("healthy"), now + 60)
    assert ended.phase == "aborted" and "no longer defines" in ended.ending
