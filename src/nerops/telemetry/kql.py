"""Alert rules compiled to KQL for Azure Monitor (Application Insights ``AppMetrics``).

``AppMetrics`` keeps pre-aggregated rows like the local store: ``Name``, ``Sum``, ``ItemCount``, ``Min``,
``Max`` and the recording's attributes as string ``Properties`` (``deployment``, ``model_version``,
``endpoint``, ``traffic_class``, ``label``). A histogram's mean is ``sum(Sum) / sum(ItemCount)``; a
counter's total is ``sum(Sum)``. There are no bucket counts, so quantile rules (p95...) do not compile:
the rules file marks them ``local_only`` and names the rule Azure uses instead (the latency-edge
counters ``latency_over_<E>ms`` answer "how many requests were slower than E" on both).

The query has the same semantics as the local evaluation: one value per deployment (and label) per
``window``-long step over the ``for`` duration, each step with at least ``min_samples``, compared with
an absolute threshold or with ``factor`` x a baseline window. It returns one row per deployment
(x label) for which the rule fires, so the scheduled query rule alerts when the result has more than 0
rows: an integer threshold, as log alerts require. Rates and ratios to a baseline are compared as
percentages (``error_pct > 5``, ``ratio_pct > 200``). Rules over the controller's own metrics
(``aggregation: staleness``) compile in :func:`nerops.telemetry.staleness.staleness_kql`: one row per stuck rollout.
"""

from __future__ import annotations

from typing import Any

from nerops.errors import ConfigurationError
from nerops.telemetry.durations import format_duration, iso_duration, kql_timespan
from nerops.telemetry.formatting import kql_number as _number
from nerops.telemetry.formatting import kql_string as _string
from nerops.telemetry.metrics import metric_spec
from nerops.telemetry.rules import Rule

AZURE_SEVERITY = {"critical": 1, "warning": 2, "info": 3}


class KqlError(ConfigurationError):
    """A rule cannot be expressed on AppMetrics."""


_PROPERTIES = ",\n             ".join(
    f'{name} = tostring(Properties["{name}"])'
    for name in ("deployment", "model_version", "endpoint", "traffic_class", "label")
)


def lookback_s(rule: Rule) -> float:
    """How far back the query reads: the steps, and the baseline window if any (staleness: its lookback)."""
    if rule.aggregation == "staleness":
        return rule.lookback_s
    span = rule.steps * rule.window
    baseline = rule.condition.baseline
    if baseline is not None:
        span = max(span, baseline.offset_s + baseline.window)
    return span


def to_kql(rule: Rule, *, reference: str | None = None) -> str:
    """The rule as a KQL query over AppMetrics returning one row per firing deployment (x label).

    ``reference``: the reference deployment's name, for rules whose baseline is ``deployment: reference``.
    """
    if rule.local_only is not None:
        raise KqlError(
            f"rule '{rule.name}' is local-only (it needs what only the local store keeps); "
            f"on Azure, rule '{rule.local_only}' stands in for it"
        )
    if rule.quantile is not None:
        raise KqlError(
            f"rule '{rule.name}': {rule.aggregation} needs bucket counts, which AppMetrics does not keep; "
            "use aggregation 'mean' (or a query over AppRequests) for Azure"
        )
    if rule.aggregation == "staleness":
        from nerops.telemetry.staleness import staleness_kql

        return staleness_kql(rule)
    baseline = rule.condition.baseline
    against_reference = baseline is not None and baseline.deployment == "reference"
    # a baseline of one other arm (the reference) or of the whole endpoint is joined on a constant key
    against_one = baseline is not None and baseline.deployment in ("reference", "endpoint")
    if against_reference and not reference:
        raise KqlError(f"rule '{rule.name}' compares with a reference deployment: pass reference=<deployment>")
    names = [rule.metric] if rule.metric else [rule.numerator, rule.denominator]
    keys = "deployment, label" if rule.per_label else "deployment"
    lines = _header(rule, reference)
    lines += [
        "let now_ = now();",
        f"let window_ = {kql_timespan(rule.window)};",
        f"let steps_ = {rule.steps};",
        f"let min_samples_ = {rule.min_samples};",
    ]
    if against_reference:
        lines.append(f"let reference_ = {_string(reference)};")
    classes = ", ".join(_string(name) for name in rule.traffic)
    lines.append(
        "let rows_ = AppMetrics\n"
        f"    | where TimeGenerated > now_ - {kql_timespan(lookback_s(rule))} and TimeGenerated <= now_\n"
        f"    | where Name in ({', '.join(_string(name) for name in dict.fromkeys(names))})\n"
        f"    | extend {_PROPERTIES}\n"
        f"    | where traffic_class in ({classes});"
    )
    lines.append(
        "let steps_rows_ = rows_\n"
        "    | where TimeGenerated > now_ - window_ * steps_\n"
        "    | extend step = toint((now_ - TimeGenerated) / window_);"
    )
    if rule.per_label:
        lines += _per_label_lets(rule, against_one)
    else:
        lines.append(f"let current_ = steps_rows_\n{_measure(rule, 'deployment, step')};")
    if baseline is not None:
        base_filter = (
            f"TimeGenerated > now_ - {kql_timespan(baseline.offset_s + baseline.window)} "
            f"and TimeGenerated <= now_ - {kql_timespan(baseline.offset_s)}"
        )
        who = _baseline_arm(baseline.deployment)
        if rule.per_label:
            base_keys = "label" if against_one else "deployment, label"
            lines.append(
                f"let baseline_ = baseline_labels_\n    | where samples >= min_samples_\n"
                f"    | project {base_keys}, baseline = numerator / samples;"
            )
        else:
            base_keys = "k_" if against_one else "deployment"
            summarize = _measure(rule, "deployment")
            lines.append(
                f"let baseline_ = rows_\n    | where {base_filter}{who}\n{summarize}\n"
                "    | where samples >= min_samples_\n"
                + ("    | extend k_ = 1\n" if against_one else "")
                + f"    | project {base_keys}, baseline = value;"
            )
        current = "current_" + ("\n| extend k_ = 1" if against_one and not rule.per_label else "")
        condition = rule.condition
        if condition.margin:
            compared = f"value {condition.op} {_number(condition.factor)} * baseline + {_number(condition.margin)}"
        else:
            compared = f"baseline > 0 and 100.0 * value / baseline {condition.op} {_number(100.0 * condition.factor)}"
        lines += [
            current,
            f"| join kind=inner (baseline_) on {base_keys}",
            f"| extend holds = samples >= min_samples_ and {compared}",
            f"| summarize steps_seen = dcount(step), steps_held = countif(holds), value = take_anyif(value, step == 0),"
            f"\n    samples = take_anyif(samples, step == 0), baseline = take_any(baseline) by {keys}",
            "| where steps_seen == steps_ and steps_held == steps_",
            f"| extend ratio_pct = round(100.0 * value / baseline, 1)\n| project {keys}, value, baseline, ratio_pct, "
            "samples, steps_held",
        ]
    else:
        lines += [
            "current_",
            f"| extend holds = samples >= min_samples_ and value {rule.condition.op} "
            f"{_number(rule.condition.threshold)}",
            f"| summarize steps_seen = dcount(step), steps_held = countif(holds), value = take_anyif(value, step == 0),"
            f"\n    samples = take_anyif(samples, step == 0) by {keys}",
            "| where steps_seen == steps_ and steps_held == steps_",
            f"| project {keys}, value, samples, steps_held",
        ]
    return "\n".join(lines) + "\n"


def _header(rule: Rule, reference: str | None) -> list[str]:
    condition = rule.condition
    unit = " %" if rule.aggregation == "rate" else ""
    if condition.relative:
        who = {"reference": f"deployment {reference!r}", "endpoint": "the whole endpoint"}.get(
            condition.baseline.deployment, "the same deployment"
        )
        compared = (
            f"{condition.op} {_number(100.0 * condition.factor)} % of the baseline ({who} over "
            f"{format_duration(condition.baseline.window)} ending {format_duration(condition.baseline.offset_s)} "
            "before now)"
        )
    else:
        compared = f"{condition.op} {_number(condition.threshold)}{unit}"
    by = "deployment and label" if rule.per_label else "deployment"
    return [
        f"// nerops alert rule '{rule.name}' ({rule.severity}, {rule.signal}): {rule.description}",
        f"// Fires per {by} when {rule.expression} {compared} in each of {rule.steps} step(s) of "
        f"{format_duration(rule.window)} (for {format_duration(rule.for_)}), each with >= {rule.min_samples} samples.",
        f"// Scheduled query rule: time range {iso_duration(lookback_s(rule))}, evaluation frequency "
        f"{iso_duration(rule.window)}, alert when the number of rows > 0; dimensions: {by}.",
    ]


def _total(name: str, role: str) -> str:
    """The KQL sum of a metric: Sum for counters and histogram sums; ItemCount for a histogram's count."""
    column = "ItemCount" if role == "count" and metric_spec(name).is_histogram else "Sum"
    return f"sumif({column}, Name == {_string(name)})"


def _measure(rule: Rule, by: str) -> str:
    if rule.aggregation == "mean":
        return (
            f"    | summarize total_ = {_total(rule.metric, 'sum')}, samples = {_total(rule.metric, 'count')} by {by}\n"
            "    | extend value = iff(samples > 0, total_ / samples, real(null))"
        )
    scale = "100.0 * " if rule.aggregation == "rate" else "1.0 * "
    return (
        f"    | summarize numerator = {_total(rule.numerator, 'sum')}, samples = {_total(rule.denominator, 'count')} "
        f"by {by}\n"
        f"    | extend value = iff(samples > 0, {scale}numerator / samples, real(null))"
    )


def _baseline_arm(who: str) -> str:
    """What follows the baseline window's ``where``: one deployment, or every row as one arm, or its own."""
    if who == "reference":
        return " and deployment == reference_"
    if who == "endpoint":
        return '\n    | extend deployment = "*"'
    return ""


def _per_label_lets(rule: Rule, against_one: bool) -> list[str]:
    baseline = rule.condition.baseline
    numerator, denominator = _string(rule.numerator), _string(rule.denominator)
    lines = []
    if baseline is not None:
        base_filter = (
            f"TimeGenerated > now_ - {kql_timespan(baseline.offset_s + baseline.window)} "
            f"and TimeGenerated <= now_ - {kql_timespan(baseline.offset_s)}"
        )
        who = _baseline_arm(baseline.deployment)
        lines.append(
            f"let baseline_rows_ = rows_ | where {base_filter}{who};\n"
            f"let baseline_labels_ = baseline_rows_\n"
            f"    | where Name == {denominator}\n"
            f"    | summarize samples = {_total(rule.denominator, 'count')} by deployment\n"
            f"    | join kind=inner (baseline_rows_ | where Name == {numerator} | distinct deployment, label) "
            "on deployment\n"
            f"    | join kind=leftouter (baseline_rows_ | where Name == {numerator} "
            f"| summarize numerator = sum(Sum) by deployment, label) on deployment, label\n"
            "    | extend numerator = coalesce(numerator, 0.0);"
        )
    # labels to judge per deployment: its own labels in the steps, plus the baseline's labels
    # (a label that vanished entirely is the drop to catch)
    if baseline is None:
        extra = ""
    elif against_one:
        extra = (
            f"\n    | union (steps_rows_ | where Name == {denominator} | distinct deployment | extend k_ = 1\n"
            "        | join kind=inner (baseline_labels_ | distinct label | extend k_ = 1) on k_ "
            "| project deployment, label)"
        )
    else:
        extra = "\n    | union (baseline_labels_ | distinct deployment, label)"
    lines.append(
        f"let labels_ = steps_rows_ | where Name == {numerator} | distinct deployment, label{extra}\n"
        "    | distinct deployment, label;"
    )
    lines.append(
        "let current_ = steps_rows_\n"
        f"    | where Name == {denominator}\n"
        f"    | summarize samples = {_total(rule.denominator, 'count')} by deployment, step\n"
        "    | join kind=inner (labels_) on deployment\n"
        f"    | join kind=leftouter (steps_rows_ | where Name == {numerator} "
        "| summarize numerator = sum(Sum) by deployment, label, step) on deployment, label, step\n"
        "    | extend value = iff(samples > 0, 1.0 * coalesce(numerator, 0.0) / samples, real(null))\n"
        "    | project deployment, label, step, value, samples;"
    )
    return lines


def scheduled_query_rule(rule: Rule, *, reference: str | None = None) -> dict[str, Any]:
    """The ``properties`` of a ``Microsoft.Insights/scheduledQueryRules`` resource for this rule (no scopes)."""
    dimensions = ["deployment", "label"] if rule.per_label else ["deployment"]
    if rule.aggregation == "staleness":
        dimensions = ["endpoint", "rollout", "deployment"]
    return {
        "displayName": f"nerops {rule.name}",
        "description": rule.description,
        "severity": AZURE_SEVERITY[rule.severity],
        "enabled": True,
        "evaluationFrequency": iso_duration(rule.window),
        "windowSize": iso_duration(lookback_s(rule)),
        "criteria": {
            "allOf": [
                {
                    "query": to_kql(rule, reference=reference),
                    "timeAggregation": "Count",
                    "dimensions": [{"name": name, "operator": "Include", "values": ["*"]} for name in dimensions],
                    "operator": "GreaterThan",
                    "threshold": 0,
                    "failingPeriods": {"numberOfEvaluationPeriods": 1, "minFailingPeriodsToAlert": 1},
                }
            ]
        },
    }
