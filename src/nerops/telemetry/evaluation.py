"""Alert-rule evaluation: read the rule's windows, assess each deployment (and label), keep the evidence.

A rule measures one value per deployment (and per entity label, with ``per_label``) over a ``window``:

    aggregation  value                                       samples (checked against min_samples)
    mean         sum / count of a histogram metric           its measurements (requests, documents)
    p50..p99     quantile estimated from histogram buckets   its measurements
    ratio        sum(numerator) / count(denominator)         the denominator's count
    rate         100 * sum(numerator) / count(denominator)   the denominator's count   (a percentage)

and compares it with a ``condition`` (see :mod:`nerops.telemetry.rules`), decided by
:func:`nerops.telemetry.assessment.assess`. A store failure gives ``error`` for that rule (with the
message); :func:`evaluate` never raises for one rule. Results carry their evidence: queries, windows,
values, baseline, samples, threshold.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from nerops.telemetry.assessment import _OPS, Assessment, Measured, assess
from nerops.telemetry.buckets import Aggregate
from nerops.telemetry.durations import format_duration
from nerops.telemetry.results import RuleResult, StepEvidence, Window, baseline_window, step_windows
from nerops.telemetry.rules import Rule
from nerops.telemetry.store import TelemetryStore

ALL_DEPLOYMENTS = "*"


@dataclass
class _WindowData:
    numerators: dict[tuple[str, str], Aggregate] = field(default_factory=dict)
    denominators: dict[str, Aggregate] = field(default_factory=dict)

    def deployments(self) -> set[str]:
        return {deployment for deployment, _ in self.numerators} | set(self.denominators)

    def labels(self, deployment: str) -> set[str]:
        return {label for dep, label in self.numerators if dep == deployment and label}

    def measure(self, rule: Rule, deployment: str, label: str, window: Window) -> Measured:
        numerator = self.numerators.get((deployment, label))
        if rule.aggregation in ("ratio", "rate"):
            denominator = self.denominators.get(deployment)
            samples = denominator.count if denominator else 0.0
            if not samples:
                return Measured(None, 0.0, window.start, window.end)
            value = (numerator.sum if numerator else 0.0) / samples
            return Measured(value * 100.0 if rule.aggregation == "rate" else value, samples, window.start, window.end)
        if numerator is None:
            return Measured(None, 0.0, window.start, window.end)
        value = numerator.mean if rule.quantile is None else numerator.quantile(rule.quantile)
        return Measured(value, numerator.count, window.start, window.end)


def _fetch(
    rule: Rule, store: TelemetryStore, window: Window, deployments: Sequence[str] | None, queries: list[str]
) -> _WindowData:
    def group(metric: str, by: tuple[str, ...], buckets: bool = False) -> dict[tuple[str, ...], Aggregate]:
        options = {"by": by, "deployments": deployments, "mirrored": rule.mirrored}
        queries.append(str(store.group_query(rule.signal, metric, window.start, window.end, **options)))
        if buckets:
            queries.append(
                str(store.group_query(rule.signal, metric, window.start, window.end, buckets=True, **options))
            )
        return store.group(rule.signal, metric, window.start, window.end, buckets=buckets, **options)

    data = _WindowData()
    if rule.aggregation in ("ratio", "rate"):
        by = ("deployment", "label") if rule.per_label else ("deployment",)
        for key, aggregate in group(rule.numerator, by).items():
            data.numerators[(key[0], key[1] if rule.per_label else "")] = aggregate
        data.denominators = {key[0]: aggregate for key, aggregate in group(rule.denominator, ("deployment",)).items()}
    else:
        groups = group(rule.metric, ("deployment",), buckets=rule.quantile is not None)
        data.numerators = {(key[0], ""): aggregate for key, aggregate in groups.items()}
    return data


def evaluate(
    rules: Iterable[Rule],
    store: TelemetryStore,
    *,
    now: float,
    deployments: Sequence[str] | None = None,
    reference: str | None = None,
) -> list[RuleResult]:
    """Every rule for every deployment (given, or those with data of the rule's signal in its steps).

    ``reference``: the deployment that rules with ``baseline.deployment: reference`` compare with.
    One result per rule x deployment (x label for ``per_label`` rules); never raises for one rule.
    """
    results: list[RuleResult] = []
    for rule in rules:
        try:
            results.extend(_evaluate_rule(rule, store, now, deployments, reference))
        except Exception as exc:  # one rule's failure must not hide the others' results
            message = f"evaluation failed: {type(exc).__name__}: {exc}"
            for deployment in deployments or [ALL_DEPLOYMENTS]:
                results.append(_error_result(rule, deployment, now, message))
    return results


def _error_result(rule: Rule, deployment: str, now: float, message: str) -> RuleResult:
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
    )


def _evaluate_rule(
    rule: Rule, store: TelemetryStore, now: float, deployments: Sequence[str] | None, reference: str | None
) -> list[RuleResult]:
    windows = step_windows(rule, now)
    base_window = baseline_window(rule, now)
    against_reference = base_window is not None and rule.condition.baseline.deployment == "reference"
    if against_reference and not reference:
        raise ValueError("this rule compares with a reference deployment: evaluate it with reference=<deployment>")
    query_deployments = None
    if deployments is not None:
        query_deployments = sorted(set(deployments) | ({reference} if against_reference else set()))
    queries: list[str] = []
    step_data = [_fetch(rule, store, window, query_deployments, queries) for window in windows]
    base_data = _fetch(rule, store, base_window, query_deployments, queries) if base_window else None
    if deployments is None:
        names = sorted(set().union(*(data.deployments() for data in step_data)))
    else:
        names = list(deployments)
    query_text = "\n".join(queries)
    results = []
    for deployment in names:
        base_deployment = reference if against_reference else deployment
        labels = [""]
        if rule.per_label:
            found = set().union(*(data.labels(deployment) for data in step_data))
            if base_data is not None:
                found |= base_data.labels(base_deployment)
            labels = sorted(found)
            if not labels:
                results.append(_no_label_result(rule, deployment, windows, base_window, base_deployment, query_text))
                continue
        for label in labels:
            measured = [data.measure(rule, deployment, label, w) for data, w in zip(step_data, windows, strict=True)]
            baseline = base_data.measure(rule, base_deployment, label, base_window) if base_data else None
            assessment = assess(measured, baseline, rule)
            result = _result(rule, deployment, label, measured, baseline, base_deployment, assessment, query_text)
            results.append(result)
    return results


def _result(
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
        query=query,
    )


def _no_label_result(
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
        query=query,
    )
