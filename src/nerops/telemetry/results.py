"""What an evaluation returns: per rule, deployment and label a state with its evidence (plain data)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from nerops.telemetry.assessment import State
from nerops.telemetry.rules import Rule


@dataclass(frozen=True)
class Window:
    start: float
    end: float


def step_windows(rule: Rule, now: float) -> list[Window]:
    """The steps covering ``for`` (oldest first): ``(now - (i+1) * window, now - i * window]``."""
    return [Window(now - (i + 1) * rule.window, now - i * rule.window) for i in reversed(range(rule.steps))]


def baseline_window(rule: Rule, now: float) -> Window | None:
    baseline = rule.condition.baseline
    if baseline is None:
        return None
    end = now - baseline.offset_s
    return Window(end - baseline.window, end)


@dataclass(frozen=True)
class StepEvidence:
    start: float
    end: float
    value: float | None
    samples: float
    held: bool | None  # None: fewer samples than min_samples


@dataclass(frozen=True)
class RuleResult:
    """One rule's state for one deployment (and label), with its evidence."""

    rule: str
    deployment: str
    state: State
    message: str
    severity: str = "warning"
    signal: str = ""
    label: str = ""
    expression: str = ""
    op: str = ""
    value: float | None = None  # the latest step's value
    baseline: float | None = None
    factor: float | None = None
    threshold: float | None = None
    samples: float = 0.0  # the latest step's samples
    min_samples: int = 0
    window_s: float = 0.0
    window_start: float = 0.0  # the evaluated period: all steps
    window_end: float = 0.0
    baseline_deployment: str | None = None
    baseline_start: float | None = None
    baseline_end: float | None = None
    baseline_samples: float | None = None
    for_s: float = 0.0
    for_check: str = ""
    steps: tuple[StepEvidence, ...] = ()
    query: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able evidence (for the ledger, artifacts, health judgements)."""
        return asdict(self)
