"""What an evaluation returns: per rule, deployment and label a state with its evidence (plain data)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from nerops.telemetry.assessment import _OPS, Assessment, Measured, State
from nerops.telemetry.durations import format_duration
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
    traffic: tuple[str, ...] = ()  # the traffic classes read
    query: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able evidence (for the ledger, artifacts, health judgements)."""
        return asdict(self)


def error_result(rule: Rule, deployment: str, now: float, message: str, query: str = "") -> RuleResult:
    steps = step_windows(rule, now)
    return RuleResult(
        rule=rule.name,
        deployment=deployment,
        state="error",
        message=message,
        severity=rule.severity,
        signal=rule.signal,
        expression=rule.expression,
        op=rule.condition.op,
        factor=rule.condition.factor,
        threshold=rule.condition.threshold,
        min_samples=rule.min_samples,
        window_s=rule.window,
        window_start=steps[0].start,
        window_end=steps[-1].end,
        for_s=rule.for_,
        traffic=rule.traffic,
        query=query,
    )


def build_result(
    rule: Rule,
    deployment: str,
    label: str,
    measured: Sequence[Measured],
    baseline: Measured | None,
    base_deployment: str,
    assessment: Assessment,
    query: str,
) -> RuleResult:
    compare = _OPS[rule.condition.op]
    steps = tuple(
        StepEvidence(
            m.start,
            m.end,
            m.value,
            m.samples,
            None
            if m.value is None or m.samples < rule.min_samples or assessment.threshold is None
            else compare(m.value, assessment.threshold),
        )
        for m in measured
    )
    latest = measured[-1]
    what = rule.expression.replace("[label]", f"[{label}]") if label else rule.expression
    for_check = (
        f"condition required in each of {len(steps)} step(s) of {format_duration(rule.window)} covering "
        f"for={format_duration(rule.for_)}: held {assessment.held}, not held {assessment.failed}, "
        f"under {rule.min_samples} samples {assessment.short}"
    )
    return RuleResult(
        rule=rule.name,
        deployment=deployment,
        state=assessment.state,
        message=f"{what} {assessment.reason}",
        severity=rule.severity,
        signal=rule.signal,
        label=label,
        expression=what,
        op=rule.condition.op,
        value=latest.value,
        baseline=None if baseline is None else baseline.value,
        factor=rule.condition.factor,
        threshold=assessment.threshold,
        samples=latest.samples,
        min_samples=rule.min_samples,
        window_s=rule.window,
        window_start=measured[0].start,
        window_end=latest.end,
        baseline_deployment=base_deployment if baseline is not None else None,
        baseline_start=None if baseline is None else baseline.start,
        baseline_end=None if baseline is None else baseline.end,
        baseline_samples=None if baseline is None else baseline.samples,
        for_s=rule.for_,
        for_check=for_check,
        steps=steps,
        traffic=rule.traffic,
        query=query,
    )


def no_label_result(
    rule: Rule,
    deployment: str,
    windows: Sequence[Window],
    base_window: Window | None,
    base_deployment: str,
    query: str,
) -> RuleResult:
    return RuleResult(
        rule=rule.name,
        deployment=deployment,
        state="no_data",
        message=f"{rule.expression}: no entity of any label in the steps or the baseline",
        severity=rule.severity,
        signal=rule.signal,
        expression=rule.expression,
        op=rule.condition.op,
        factor=rule.condition.factor,
        threshold=rule.condition.threshold,
        min_samples=rule.min_samples,
        window_s=rule.window,
        window_start=windows[0].start,
        window_end=windows[-1].end,
        baseline_deployment=base_deployment if base_window else None,
        baseline_start=base_window.start if base_window else None,
        baseline_end=base_window.end if base_window else None,
        for_s=rule.for_,
        traffic=rule.traffic,
        query=query,
    )
