"""Alert-rule evaluation: read the rule's windows through the metrics-source port, assess each deployment.

A rule measures one value per deployment (and per entity label, with ``per_label``) over a ``window``:

    aggregation  value                                       samples (checked against min_samples)
    mean         sum / count of a histogram metric           its measurements (requests, documents)
    p50..p99     quantile estimated from histogram buckets   its measurements
    ratio        sum(numerator) / count(denominator)         the denominator's count
    rate         100 * sum(numerator) / count(denominator)   the denominator's count   (a percentage)

and compares it with a ``condition`` (see :mod:`nerops.telemetry.rules`), decided by
:func:`nerops.telemetry.assessment.assess`. Only the rule's traffic classes are read (live by default).

Fail closed: when the source says a step or the baseline window is incomplete (telemetry loss, a
watermark behind or missing) the rule is ``error`` for every deployment, never ``no_data`` and never
``ok``. A source failure is ``error`` too (with the message); :func:`evaluate` never raises for one
rule. Results carry their evidence: queries, windows, values, baseline, samples, threshold.

Rules over the controller's own metrics (``aggregation: staleness``, e.g. ``rollout_stuck``) read each
rollout's last look instead: see :mod:`nerops.telemetry.staleness`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nerops.telemetry.assessment import Measured, assess
from nerops.telemetry.buckets import Aggregate
from nerops.telemetry.results import (
    RuleResult,
    Window,
    baseline_window,
    build_result,
    error_result,
    no_label_result,
    step_windows,
)
from nerops.telemetry.rules import Rule
from nerops.telemetry.source import ENDPOINT, Arm, ArmInterval, MetricsSource, Series
from nerops.telemetry.staleness import evaluate_staleness

ALL_DEPLOYMENTS = "*"


def evaluate(
    rules: Iterable[Rule],
    source: MetricsSource,
    *,
    now: float,
    deployments: Sequence[str] | None = None,
    reference: str | None = None,
    endpoint: str | None = None,
) -> list[RuleResult]:
    """Every rule for every deployment (given, or those with data in the rule's steps).

    ``reference``: the deployment that rules with ``baseline.deployment: reference`` compare with.
    ``endpoint``: read only that endpoint's telemetry (None: every endpoint in the source).
    One result per rule x deployment (x label for ``per_label`` rules); never raises for one rule.
    """
    results: list[RuleResult] = []
    for rule in rules:
        try:
            results.extend(_evaluate_rule(rule, source, now, deployments, reference, endpoint))
        except Exception as exc:  # one rule's failure must not hide the others' results
            message = f"evaluation failed: {type(exc).__name__}: {exc}"
            for deployment in deployments or [ALL_DEPLOYMENTS]:
                results.append(error_result(rule, deployment, now, message))
    return results


def measure(rule: Rule, values: ArmInterval, label: str) -> Measured:
    """The rule's value and sample count for one arm over one interval (pure)."""
    if rule.aggregation in ("ratio", "rate"):
        samples = values.get(rule.denominator).count
        if not samples:
            return Measured(None, 0.0, values.start, values.end)
        value = values.get(rule.numerator, label).sum / samples
        return Measured(value * 100.0 if rule.aggregation == "rate" else value, samples, values.start, values.end)
    aggregate = values.get(rule.metric)
    if not aggregate.count:
        return Measured(None, 0.0, values.start, values.end)
    value = aggregate.mean if rule.quantile is None else aggregate.quantile(rule.quantile)
    return Measured(value, aggregate.count, values.start, values.end)


def per_deployment(series: Series) -> dict[str, list[ArmInterval]]:
    """Every deployment's intervals (oldest first), model versions merged: ``{deployment: [...]}``."""
    names = sorted({row.arm.deployment or "" for row in series.rows})
    return {name: [_merged(series, Arm(name), start) for start, _ in series.intervals()] for name in names}


def _merged(series: Series, arm: Arm, start: float) -> ArmInterval:
    values: dict[tuple[str, str], Aggregate] = {}
    for row in series.rows:
        if row.start == start and arm.matches(row.arm.deployment or "", row.arm.model_version or ""):
            for key, aggregate in row.values.items():
                values[key] = values[key].merge(aggregate) if key in values else aggregate
    return ArmInterval(start, min(series.end, start + series.step), arm, values)


def _evaluate_rule(
    rule: Rule,
    source: MetricsSource,
    now: float,
    deployments: Sequence[str] | None,
    reference: str | None,
    endpoint: str | None,
) -> list[RuleResult]:
    if rule.aggregation == "staleness":
        return evaluate_staleness(rule, source, now, deployments, endpoint)
    windows = step_windows(rule, now)
    base_window = baseline_window(rule, now)
    who = rule.condition.baseline.deployment if base_window is not None else None
    if who == "reference" and not reference:
        raise ValueError("this rule compares with a reference deployment: evaluate it with reference=<deployment>")
    metrics = [rule.metric] if rule.metric else [rule.numerator, rule.denominator]
    arms = None if deployments is None else [Arm(name) for name in deployments]
    detail = {"buckets": rule.quantile is not None, "squares": False}  # a rule needs sums, counts, quantiles
    start, end = windows[0].start, windows[-1].end
    steps = source.series(endpoint, arms, metrics, start, end, rule.window, rule.traffic, **detail)
    base = None
    if base_window is not None:
        base_arms = {"self": arms, "reference": [Arm(reference)], "endpoint": [ENDPOINT]}[who]
        span = base_window.end - base_window.start
        base = source.series(
            endpoint, base_arms, metrics, base_window.start, base_window.end, span, rule.traffic, **detail
        )
    query = "\n".join(series.query for series in (steps, base) if series is not None and series.query)
    step_data = per_deployment(steps)
    names = list(deployments) if deployments is not None else sorted(step_data)
    problem = steps.problem(rule.signal) or (base.problem(rule.signal) if base is not None else None)
    if problem is not None:  # fail closed: incomplete telemetry is an error, never no_data, never ok
        message = f"telemetry incomplete, cannot judge: {problem}"
        return [error_result(rule, name, now, message, query) for name in names or [ALL_DEPLOYMENTS]]
    results = []
    for name in names:
        intervals = step_data.get(name) or [ArmInterval(w.start, w.end, Arm(name)) for w in windows]
        base_values = _baseline(base, who, name, reference, base_window)
        base_name = {"reference": reference, "endpoint": str(ENDPOINT)}.get(who or "", name)
        labels = [""]
        if rule.per_label:
            found = {label for values in intervals for label in values.labels(rule.numerator)}
            if base_values is not None:
                found |= set(base_values.labels(rule.numerator))
            labels = sorted(found)
            if not labels:
                results.append(no_label_result(rule, name, windows, base_window, base_name, query))
                continue
        for label in labels:
            measured = [measure(rule, values, label) for values in intervals]
            baseline = measure(rule, base_values, label) if base_values is not None else None
            assessment = assess(measured, baseline, rule)
            results.append(build_result(rule, name, label, measured, baseline, base_name, assessment, query))
    return results


def _baseline(
    base: Series | None, who: str | None, name: str, reference: str | None, window: Window | None
) -> ArmInterval | None:
    if base is None or window is None:
        return None
    arm = {"reference": Arm(reference), "endpoint": ENDPOINT}.get(who or "", Arm(name))
    return _merged(base, arm, window.start)
