"""The rollout's state machine, pure: ``advance(plan, state, verdict, now) -> (state, actions)``.

                       start
                         |
                         v
     +------------ progressing ------------+          healthy at the end of a step's wait: next step
     |    ^   |     (step i, weight w)     |          error: traffic frozen (still progressing, ``frozen``)
     | resume | pause                      |          no data / inconclusive: wait, up to the deadline
     |    |   v                            |
     |   paused (traffic frozen,           | unhealthy (any phase), manual rollback
     |    judge running)                   v
     |                               rolled_back    traffic to stable; version archived (rolled_back)
     | deadline with no decision,
     | manual abort, pause deadline  ->  aborted    traffic to stable; version stays prod: a new attempt may follow
     |
     | approval step on (the rollout asked for it), before the plan's approval step:
     |   awaiting_approval (traffic frozen, judge running): approve -> that step; timeout -> on_timeout
     |
     +-- the bake after 100 % healthy -> promoted   100 % candidate; the old deployment retired; champion moves

Deadlines and waits are absolute times in the state, so a resumed run (after a crash) does not extend
them; a manual pause shifts them by the time spent paused. The way back always runs in this order:
traffic and mirror first, then the evidence, then the version's tag, then scaling the candidate down.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Literal

from nerops.rollout.actions import (
    Action,
    Command,
    Record,
    RetireDeployment,
    Scale,
    SetChampion,
    SetTraffic,
    Smoke,
    TagVersion,
)
from nerops.rollout.plan import Plan, Step
from nerops.rollout.verdicts import StepSpan, Verdict

Phase = Literal["progressing", "paused", "awaiting_approval", "promoted", "rolled_back", "aborted"]
ENDED: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})


@dataclass(frozen=True)
class RolloutState:
    endpoint: str
    version: str
    attempt: int
    candidate: str  # the new deployment
    stable: str | None  # the deployment serving before the rollout
    phase: Phase
    step: int
    started: float
    step_started: float
    wait_until: float
    deadline: float
    weight: int = 0
    mirror: int = 0
    frozen: str | None = None  # why traffic is frozen (the metrics failed); None: not frozen
    paused_at: float | None = None
    pause_until: float | None = None  # None while paused: indefinitely
    pause_default: str = "abort"
    pause_reason: str = ""
    last_verdict: str | None = None
    approval: str = ""  # "": none asked; "required": asked, not given yet; else who approved, and why
    approval_until: float | None = None  # while awaiting_approval: then the plan's on_timeout
    ending: str = ""
    steps: tuple[StepSpan, ...] = ()
    weights: tuple[int, ...] = (0,)

    @property
    def ended(self) -> bool:
        return self.phase in ENDED

    @property
    def rollout_id(self) -> str:
        return f"{self.endpoint}/v{self.version}/{self.attempt}"


def start(
    plan: Plan,
    *,
    endpoint: str,
    version: str,
    attempt: int,
    candidate: str,
    stable: str | None,
    now: float,
    approval: bool = False,
) -> tuple[RolloutState, tuple[Action, ...]]:
    """A rollout's first state, at readiness: the candidate at 0 %, smoke requests to send.

    ``approval``: wait for an approval before the plan's approval step (ValueError if the plan has none).
    """
    if approval and plan.approval is None:
        raise ValueError(f"profile {plan.profile!r} has no approval step: add 'approval' to it in the policy")
    first = plan.steps[0]
    state = RolloutState(
        endpoint,
        version,
        attempt,
        candidate,
        stable,
        "progressing",
        0,
        now,
        now,
        now + first.wait,
        now + first.deadline,
        steps=(StepSpan(0, first.kind, now),),
        approval="required" if approval else "",
    )
    actions = (
        Scale(candidate, plan.instances_for(0)),
        SetTraffic(0, 0, None),
        Smoke(first.smoke_requests),
        Record("started", f"rollout {state.rollout_id} started: {' -> '.join(s.label for s in plan.steps)}"),
    )
    return state, actions


def advance(plan: Plan, state: RolloutState, verdict: Verdict, now: float) -> tuple[RolloutState, tuple[Action, ...]]:
    """One look: the verdict and the clock move the rollout on, hold it, or end it."""
    if state.ended:
        return state, ()
    noted: tuple[Action, ...] = ()
    if verdict.status != state.last_verdict:
        noted = (Record("verdict", f"verdict {state.last_verdict or '-'} -> {verdict.status}: {verdict.reason}"),)
    state = replace(state, last_verdict=verdict.status)
    if verdict.status == "unhealthy":
        return _end(plan, state, now, "rolled_back", f"unhealthy: {verdict.reason}", noted)
    if state.phase == "paused":
        if state.pause_until is not None and now >= state.pause_until:
            if state.pause_default == "resume":
                resumed, actions = command(
                    plan, state, Command("resume", "policy", "the pause reached its deadline"), now
                )
                return resumed, noted + actions
            return _end(plan, state, now, "aborted", "the pause reached its deadline (default: abort)", noted)
        return state, noted
    if state.phase == "awaiting_approval":
        if plan.approval is None or state.approval_until is None:  # the policy lost its approval step meanwhile
            return _end(plan, state, now, "aborted", "waiting for an approval the policy no longer defines", noted)
        if now >= state.approval_until:
            why = f"no approval within {plan.approval.timeout:.0f} s (default: {plan.approval.on_timeout})"
            if plan.approval.on_timeout == "continue":
                going = replace(state, phase="progressing", approval_until=None, approval=f"by policy: {why}")
                return _next(plan, going, now, why, noted + (Record("approved", f"approved by policy: {why}"),))
            return _end(plan, state, now, "aborted", why, noted)
        return state, noted
    step = plan.steps[state.step]
    if verdict.status == "healthy" and now >= state.wait_until:
        thawed = replace(state, frozen=None)
        return _next(plan, thawed, now, f"{step.label} healthy: {verdict.reason}", noted)
    if now >= state.deadline:
        why = f"{step.label} reached its deadline with verdict {verdict.status} ({verdict.reason})"
        return _end(plan, state, now, _ending(step), f"{why}; default action: {step.on_deadline}", noted)
    if verdict.status == "error":
        if state.frozen is None:
            noted += (Record("frozen", f"traffic frozen at {state.weight} %: {verdict.reason}"),)
        return replace(state, frozen=verdict.reason), noted
    if state.frozen is not None:
        noted += (Record("unfrozen", f"metrics back ({verdict.status}): traffic may move again"),)
    return replace(state, frozen=None), noted


def command(plan: Plan, state: RolloutState, cmd: Command, now: float) -> tuple[RolloutState, tuple[Action, ...]]:
    """A manual verb (pause, resume, promote, approve, abort, rollback), idempotent, recorded with who and why."""
    who = f"{cmd.verb} by {cmd.actor}: {cmd.reason}"
    if state.ended:
        return state, ()
    if cmd.verb == "rollback":
        return _end(plan, state, now, "rolled_back", f"manual rollback ({who})", ())
    if cmd.verb == "abort":
        return _end(plan, state, now, "aborted", f"manual abort ({who})", ())
    if cmd.verb == "pause":
        if state.phase == "paused":
            return state, ()
        until = None if cmd.indefinitely else now + plan.pause.deadline
        paused = replace(
            state,
            phase="paused",
            paused_at=now,
            pause_until=until,
            pause_default=plan.pause.on_deadline,
            pause_reason=cmd.reason,
        )
        limit = "indefinitely" if until is None else f"until {until:.0f}, then {plan.pause.on_deadline}"
        return paused, (Record("paused", f"traffic frozen at {state.weight} % {limit} ({who})"),)
    if cmd.verb == "resume":
        if state.phase != "paused":
            return state, ()
        held = now - (state.paused_at or now)
        resumed = replace(
            state,
            phase="progressing",
            paused_at=None,
            pause_until=None,
            pause_reason="",
            wait_until=state.wait_until + held,
            deadline=state.deadline + held,
        )
        return resumed, (Record("resumed", f"resumed after {held:.0f} s paused ({who})"),)
    if cmd.verb == "approve":
        if state.phase == "awaiting_approval":
            going = replace(state, phase="progressing", approval_until=None, approval=who)
            return _next(plan, going, now, f"approved ({who})", (Record("approved", f"approved ({who})"),))
        if state.approval == "required":  # ahead of the step: it will not wait
            return replace(state, approval=who), (Record("approved", f"approved ahead of the step ({who})"),)
        return state, ()
    if cmd.verb == "promote":  # a person moving it on approves it too
        approval = who if state.approval == "required" else state.approval
        moving = replace(state, phase="progressing", paused_at=None, pause_until=None, frozen=None)
        moving = replace(moving, approval_until=None, approval=approval)
        if cmd.full:
            moving = replace(moving, step=len(plan.steps) - 1)
        return _next(plan, moving, now, f"manual promote ({who})", ())
    raise ValueError(f"unknown rollout command {cmd.verb!r}")


def _ending(step: Step) -> Phase:
    return "rolled_back" if step.on_deadline == "rollback" else "aborted"


def _next(plan: Plan, state: RolloutState, now: float, why: str, noted: tuple[Action, ...]):
    """Enter the next step (scale first, then traffic), or promote after the last one."""
    spans = state.steps[:-1] + (replace(state.steps[-1], end=now),)
    if state.step + 1 >= len(plan.steps):
        done = replace(state, phase="promoted", mirror=0, ending=why, steps=spans)
        actions = [SetTraffic(100, 0, None), Record("promoted", f"promoted: {why}"), SetChampion(state.version)]
        if state.stable:
            actions += [RetireDeployment(state.stable)]
        return done, noted + tuple(actions)
    step = plan.steps[state.step + 1]
    if state.approval == "required" and plan.approval is None:  # never past a required approval without one
        return _end(plan, state, now, "aborted", "an approval is required and the policy no longer defines it", noted)
    if state.approval == "required" and step.index == plan.approval_step():
        assert plan.approval is not None
        until = now + plan.approval.timeout
        waiting = replace(state, phase="awaiting_approval", approval_until=until, frozen=None)
        summary = (
            f"{why}; {step.label} waits for approval (nerops rollout approve --reason ...) until {until:.0f}, "
            f"then {plan.approval.on_timeout}"
        )
        return waiting, noted + (Record("awaiting_approval", summary),)
    after = plan.steps[step.index + 1].weight if step.index + 1 < len(plan.steps) else step.weight
    mirror_to = {"shadow": "candidate", "bake": "stable"}.get(step.kind) if step.mirror else None
    moved = replace(
        state,
        step=step.index,
        step_started=now,
        wait_until=now + step.wait,
        deadline=now + step.deadline,
        weight=step.weight,
        mirror=step.mirror if mirror_to else 0,
        steps=spans + (StepSpan(step.index, step.kind, now),),
        weights=state.weights + ((step.weight,) if step.weight != state.weight else ()),
    )
    actions = (
        Scale(state.candidate, plan.instances_for(max(step.weight, after))),
        SetTraffic(step.weight, moved.mirror, mirror_to),
        Record("step", f"step {step.index} {step.label}: {why}"),
    )
    return moved, noted + actions


def _end(plan: Plan, state: RolloutState, now: float, phase: Phase, why: str, noted: tuple[Action, ...]):
    """Back to stable: traffic and mirror, then the evidence, then the version's tag, then scale down."""
    spans = state.steps[:-1] + (replace(state.steps[-1], end=now),)
    ended = replace(
        state,
        phase=phase,
        weight=0,
        mirror=0,
        ending=why,
        steps=spans,
        paused_at=None,
        approval_until=None,
        weights=state.weights + ((0,) if state.weight else ()),
    )
    actions: list[Action] = [SetTraffic(0, 0, None), Record(phase, f"{phase}: {why}")]
    if phase == "rolled_back":
        actions.append(TagVersion(state.version, "archived", "rolled_back"))
    actions.append(Scale(state.candidate, 0))
    return ended, noted + tuple(actions)


def traffic_of(plan: Plan, state: RolloutState) -> tuple[Action, ...]:
    """What the endpoint must look like in ``state``: the candidate's instances, then traffic and mirror.

    The record is saved before its actions run, so a controller that died in between left the endpoint
    behind its record; the next look carries these out again (each finds itself done when nothing is off).
    """
    if state.ended:
        return (SetTraffic(100 if state.phase == "promoted" else 0, 0, None),)
    step = plan.steps[state.step]
    after = plan.steps[step.index + 1].weight if step.index + 1 < len(plan.steps) else step.weight
    mirror_to = {"shadow": "candidate", "bake": "stable"}.get(step.kind) if state.mirror else None
    return (
        Scale(state.candidate, plan.instances_for(max(state.weight, after if step.kind != "readiness" else 0))),
        SetTraffic(state.weight, state.mirror, mirror_to),
    )


def state_to_dict(state: RolloutState) -> dict[str, object]:
    """The state as plain JSON values: what the flow saves after every step."""
    data = asdict(state)
    data["steps"] = [asdict(span) for span in state.steps]
    data["weights"] = list(state.weights)
    return data


def state_from_dict(data: dict[str, object]) -> RolloutState:
    """The inverse of :func:`state_to_dict` (a resumed run continues from it, deadlines unchanged)."""
    values = dict(data)
    values["steps"] = tuple(StepSpan(**span) for span in values.get("steps", ()))  # type: ignore[union-attr]
    values["weights"] = tuple(values.get("weights", (0,)))  # type: ignore[arg-type]
    return RolloutState(**values)  # type: ignore[arg-type]
