"""Drive a plan through ``judge`` and ``advance`` over synthetic traffic: the A/A smoke test, the table
tests and the bench's cross-check use it. Pure: the traffic generator is given, time is simulated.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from nerops.rollout.actions import Action
from nerops.rollout.judge import judge
from nerops.rollout.machine import RolloutState, advance, start
from nerops.rollout.plan import Plan, Step
from nerops.rollout.readiness import smoke_verdict
from nerops.rollout.synthetic import series
from nerops.rollout.verdicts import Look, Verdict
from nerops.telemetry.source import Arm, ArmInterval

# (start, end, state, step) -> rows per traffic class for that interval (both arms)
Traffic = Callable[[float, float, RolloutState, Step], Mapping[str, Sequence[ArmInterval]]]


@dataclass
class Replay:
    state: RolloutState
    verdicts: list[Verdict] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    looks: int = 0


def drive(
    plan: Plan,
    traffic: Traffic,
    *,
    candidate: Arm,
    stable: Arm,
    t0: float = 0.0,
    horizon: float | None = None,
    smoke: Sequence[int | None] | None = None,
    labels: tuple[str, ...] | None = None,
) -> Replay:
    """Run the rollout look by look until it ends or ``horizon`` (default: the worst case total) passes."""
    horizon = t0 + (horizon if horizon is not None else sum(s.deadline for s in plan.steps) + plan.interval)
    state, actions = start(
        plan,
        endpoint="replay",
        version=candidate.model_version or "",
        attempt=1,
        candidate=candidate.deployment or "",
        stable=stable.deployment,
        now=t0,
    )
    run = Replay(state, actions=list(actions))
    rows: dict[str, list[ArmInterval]] = {}
    now = t0
    while not run.state.ended and now < horizon:
        step = plan.steps[run.state.step]
        end = now + plan.interval
        for cls, new in traffic(now, end, run.state, step).items():
            rows.setdefault(cls, []).extend(new)
        now = end
        if step.kind == "readiness":
            answers = smoke if smoke is not None else [200] * step.smoke_requests
            verdict = smoke_verdict(answers, required=step.smoke_requests, now=now, interval=plan.interval)
        else:
            look = Look(
                now,
                candidate,
                stable,
                run.state.steps,
                run.state.wait_until,
                {cls: series(r, start=t0, end=now, step=plan.interval, traffic_class=cls) for cls, r in rows.items()},
                labels=labels,
            )
            verdict = judge(look, plan)
        run.state, actions = advance(plan, run.state, verdict, now)
        run.verdicts.append(verdict)
        run.actions.extend(actions)
        run.looks += 1
    return run
