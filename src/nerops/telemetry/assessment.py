"""A rule's assessment, pure: the measured steps (and baseline) of one rule -> firing / ok / no_data.

Not to be confused with the rollout's health judge, which turns many rules' results into a verdict:
this decides one rule for one deployment (and label). A three-valued AND over the steps:

- a step (or the baseline) with fewer than ``min_samples`` samples is unknown: never firing;
- any step with enough samples where the condition does not hold -> ``ok``;
- otherwise any unknown step -> ``no_data``; every step known and holding -> ``firing``.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

from nerops.telemetry.durations import format_duration
from nerops.telemetry.formatting import format_number as _num
from nerops.telemetry.rules import Rule

State = Literal["firing", "ok", "no_data", "error"]
STATES: tuple[str, ...] = ("firing", "ok", "no_data", "error")


@dataclass(frozen=True)
class Measured:
    """A value over one window and the samples it rests on (``value`` None: nothing to compute it from)."""

    value: float | None
    samples: float
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True)
class Assessment:
    state: State
    threshold: float | None  # what each step's value was compared with (absolute, or factor x baseline)
    held: int  # steps with enough samples where the condition held
    failed: int  # steps with enough samples where it did not
    short: int  # steps with too few samples (unknown)
    reason: str


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def assess(steps: Sequence[Measured], baseline: Measured | None, rule: Rule) -> Assessment:
    """The decision, pure: one :class:`Measured` per step (oldest first) and the baseline if relative."""
    condition, minimum = rule.condition, rule.min_samples
    if not steps:
        return Assessment("no_data", None, 0, 0, 0, "no step to evaluate")
    if condition.relative:
        if baseline is None or baseline.value is None or baseline.samples < minimum:
            got = 0 if baseline is None else baseline.samples
            return Assessment(
                "no_data", None, 0, 0, len(steps), f"baseline has {_num(got)} samples (min {minimum}): cannot compare"
            )
        threshold = condition.factor * baseline.value + condition.margin
        plus = f" + {_num(condition.margin)}" if condition.margin else ""
        described = (
            f"{condition.op} {_num(threshold)} ({_num(condition.factor)} x baseline {_num(baseline.value)}{plus})"
        )
    else:
        threshold = condition.threshold
        described = f"{condition.op} {_num(threshold)}"
    compare = _OPS[condition.op]
    held = failed = short = 0
    for step in steps:
        if step.value is None or step.samples < minimum:
            short += 1
        elif compare(step.value, threshold):
            held += 1
        else:
            failed += 1
    total = len(steps)
    of = f"of {total} step{'s' if total > 1 else ''} of {format_duration(rule.window)}"
    latest = steps[-1]
    if failed:
        reason = f"{_num(latest.value)}: {described} held in {held} {of}, not in {failed}"
        return Assessment("ok", threshold, held, failed, short, reason)
    if short:
        reason = (
            f"{_num(latest.value)}: {short} {of} had fewer than {minimum} samples (latest step: "
            f"{_num(latest.samples)}); {described} held in the other {held}"
        )
        return Assessment("no_data", threshold, held, failed, short, reason)
    return Assessment("firing", threshold, held, 0, 0, f"{_num(latest.value)} {described} in every one {of}")
