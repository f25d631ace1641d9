"""What the judge reads (:class:`Look`) and what it answers (:class:`Verdict`, with :class:`MetricEvidence`).

Verdicts, by precedence when metrics disagree (dry-run metrics are reported, never combined):

    unhealthy     an enforced metric's test for "worse by more than its margin" rejected at its share
                  of alpha, or a hard-failure rule fired
    error         the metrics source failed, answered partially or reported loss
    no_data       an enforced metric has fewer than its minimum samples in either arm
    inconclusive  none of these, but the step's minimum bake has not passed (or an equivalence that a
                  metric requires is not shown yet)
    healthy       none of these at the end of the minimum bake
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

from nerops.rollout.plan import StepKind
from nerops.telemetry.source import Arm, Series

Status = Literal["healthy", "unhealthy", "inconclusive", "no_data", "error"]
PRECEDENCE: tuple[Status, ...] = ("unhealthy", "error", "no_data", "inconclusive", "healthy")


def worst(statuses: list[Status]) -> Status:
    """The status that wins by :data:`PRECEDENCE` (``healthy`` for none)."""
    return min(statuses, key=PRECEDENCE.index, default="healthy")


@dataclass(frozen=True)
class StepSpan:
    """A step the rollout went through: its traffic pairing applies to intervals starting in [start, end)."""

    index: int
    kind: StepKind
    start: float
    end: float | None = None  # None: the current step


@dataclass(frozen=True)
class Look:
    """Everything one look of the judge reads; the flow gathers it, the judge does no I/O.

    ``series``: per traffic class (``live``, ``mirror``, ``probe``), since the rollout started, in steps
    of the plan's interval, up to a time every writer's watermark has passed.
    """

    now: float
    candidate: Arm
    stable: Arm
    steps: tuple[StepSpan, ...]
    wait_until: float  # the current step's minimum bake ends
    series: Mapping[str, Series] = field(default_factory=dict)
    source_error: str | None = None  # the source could not answer at all
    candidate_restarts: int = 0  # worker restarts since the rollout began
    candidate_down: str | None = None  # the candidate deployment is down: why
    labels: tuple[str, ...] | None = None  # the labels tested per label (None: those the stable arm answered)


@dataclass(frozen=True)
class MetricEvidence:
    """One metric's test at this look: every number a person needs to check the decision."""

    metric: str
    kind: str
    mode: str
    tested: str  # the null rejected when worse, e.g. "candidate <= 1.5 x stable"
    status: Status
    reason: str
    e_value: float
    threshold: float  # 1 / alpha of this metric (per side)
    alpha: float
    margin: float
    candidate_samples: float
    stable_samples: float | None
    min_samples: int
    candidate: float | None  # pooled over the strata, for reading only: the test does not pool
    stable: float | None
    strata: int  # interval x pairing cells that carried information
    traffic: tuple[str, ...]
    equivalence_e_value: float | None = None

    def to_dict(self) -> dict[str, object]:
        return {key: _finite(value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class Verdict:
    status: Status
    reason: str
    now: float
    window: tuple[float, float] | None  # the intervals judged: (first start, last end)
    interval: float
    metrics: tuple[MetricEvidence, ...] = ()
    hard_failures: tuple[str, ...] = ()
    problems: tuple[str, ...] = ()
    queries: Mapping[str, str] = field(default_factory=dict)

    @property
    def enforced(self) -> tuple[MetricEvidence, ...]:
        return tuple(m for m in self.metrics if m.mode == "enforce")

    def to_dict(self) -> dict[str, object]:
        return {
            "status": self.status,
            "reason": self.reason,
            "now": self.now,
            "window": list(self.window) if self.window else None,
            "interval": self.interval,
            "hard_failures": list(self.hard_failures),
            "problems": list(self.problems),
            "queries": dict(self.queries),
            "metrics": [metric.to_dict() for metric in self.metrics],
        }


def _finite(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return list(value) if isinstance(value, tuple) else value
