"""Rules over the controller's own telemetry (``aggregation: staleness``, e.g. ``rollout_stuck``): local and KQL.

A live owner looks at its rollout every interval (the plan's), and every look or manual command it commits
writes a ``rollout_last_look_time`` point (:mod:`nerops.controller.telemetry`). The rule reads each rollout's
latest such point within ``lookback`` and counts the look intervals gone by since::

    value = (now - last look) / the rollout's interval        firing when value <op> threshold (e.g. > 5)

A rollout whose latest point has an ended phase (promoted, rolled_back, aborted) is not judged: its end
stops the rule. Results: one per rollout that has not ended (deployment: its candidate, label: the rollout
id), and ``ok`` for every other deployment asked for, or with traffic in the rule's ``window``, so an endpoint
without a rollout reads ``ok``, never nothing. The controller writes its points when it commits a step, not
through an exporter, so no endpoint watermark holds the rule back. A point the controller failed to write
(it logs a warning) can make a rollout look stuck, never hide one; a rollout silent for longer than
``lookback`` drops out of the rule (``nerops rollout list`` still shows it).
"""

from __future__ import annotations

from collections.abc import Sequence

from nerops.telemetry.assessment import _OPS
from nerops.telemetry.durations import format_duration, iso_duration, kql_timespan
from nerops.telemetry.formatting import format_number
from nerops.telemetry.formatting import kql_number as _number
from nerops.telemetry.formatting import kql_string as _string
from nerops.telemetry.metrics import REQUEST_COUNT, TRAFFIC_CLASSES
from nerops.telemetry.results import RuleResult
from nerops.telemetry.rollout_points import ENDED_PHASES, RolloutLook
from nerops.telemetry.rules import Rule
from nerops.telemetry.source import MetricsSource

DIMENSIONS = ["endpoint", "rollout", "deployment"]


def assess_look(look: RolloutLook, rule: Rule, now: float) -> tuple[str, float | None, str]:
    """One running rollout's state, value (look intervals since its last look) and message (pure)."""
    who = f"rollout {look.rollout} ({look.phase}, candidate {look.deployment} v{look.model_version})"
    if look.interval_s <= 0:
        return "error", None, f"{who}: its points carry no look interval, so its staleness cannot be told"
    age = max(0.0, now - look.last_look)
    value = age / look.interval_s
    threshold = float(rule.condition.threshold)
    state = "firing" if _OPS[rule.condition.op](value, threshold) else "ok"
    message = (
        f"{who}: last look {format_duration(round(age))} ago, {format_number(value)} intervals of "
        f"{format_duration(look.interval_s)} ({rule.condition.op} {format_number(threshold)} fires)"
    )
    return state, value, message


def evaluate_staleness(
    rule: Rule, source: MetricsSource, now: float, deployments: Sequence[str] | None, endpoint: str | None
) -> list[RuleResult]:
    """The rule for every rollout that has not ended, and ``ok`` for the other deployments (module docstring)."""
    reader = getattr(source, "last_looks", None)
    if reader is None:
        raise ValueError(f"{type(source).__name__} does not read the controller's telemetry (no last_looks)")
    found = reader(endpoint, now - rule.lookback_s, now)
    running = [look for look in found.looks if not look.ended]
    results = []
    for look in running:
        state, value, message = assess_look(look, rule, now)
        results.append(_result(rule, look.deployment, now, state, message, found.query, look.rollout, value))
    names = list(deployments) if deployments is not None else _with_traffic(source, endpoint, rule, now)
    candidates = {look.deployment for look in running}
    for name in names:
        if name not in candidates:
            quiet = f"no rollout with {name or '(unrouted)'} as its candidate is running"
            results.append(_result(rule, name, now, "ok", quiet, found.query))
    return sorted(results, key=lambda r: (r.deployment, r.label))


def _with_traffic(source: MetricsSource, endpoint: str | None, rule: Rule, now: float) -> list[str]:
    """The deployments that answered any request in the rule's window (as other rules report on them)."""
    series = source.series(
        endpoint, None, [REQUEST_COUNT], now - rule.window, now, rule.window, TRAFFIC_CLASSES, buckets=False,
        squares=False,
    )  # fmt: skip
    return sorted({row.arm.deployment or "" for row in series.rows})


def _result(
    rule: Rule,
    deployment: str,
    now: float,
    state: str,
    message: str,
    query: str,
    rollout: str = "",
    value: float | None = None,
) -> RuleResult:
    return RuleResult(
        rule=rule.name,
        deployment=deployment,
        state=state,  # type: ignore[arg-type]
        message=message,
        severity=rule.severity,
        signal=rule.signal,
        label=rollout,
        expression=rule.expression,
        op=rule.condition.op,
        value=value,
        threshold=rule.condition.threshold,
        samples=1.0 if rollout else 0.0,
        min_samples=rule.min_samples,
        window_s=rule.lookback_s,
        window_start=now - rule.lookback_s,
        window_end=now,
        query=query,
    )


def staleness_kql(rule: Rule) -> str:
    """The rule over ``AppMetrics``: one row per rollout that has not ended and has gone too long without a look.

    The controller's recordings carry ``endpoint``, ``rollout``, ``deployment``, ``model_version``, ``phase``
    and ``interval_s`` as properties; a gauge's value is ``Sum / ItemCount``. The latest look of a rollout is
    the largest value (``TimeGenerated`` is the export's time, not the look's).
    """
    threshold = _number(rule.condition.threshold)
    properties = ", ".join(
        f'{name} = tostring(Properties["{name}"])' for name in ("endpoint", "rollout", "deployment", "model_version")
    )
    lines = [
        f"// nerops alert rule '{rule.name}' ({rule.severity}, {rule.signal}): {rule.description}",
        f"// Fires per rollout whose latest {rule.metric} point in the last {format_duration(rule.lookback_s)} "
        f"has a phase that has not ended and is {rule.condition.op} {threshold} look intervals old.",
        f"// Scheduled query rule: time range {iso_duration(rule.lookback_s)}, evaluation frequency "
        f"{iso_duration(rule.window)}, alert when the number of rows > 0; dimensions: {', '.join(DIMENSIONS)}.",
        "let now_ = now();",
        f"let threshold_ = {threshold};",
        "AppMetrics",
        f"| where TimeGenerated > now_ - {kql_timespan(rule.lookback_s)} and TimeGenerated <= now_",
        f"| where Name == {_string(rule.metric)}",
        f"| extend {properties},",
        '    phase = tostring(Properties["phase"]), interval_s = todouble(Properties["interval_s"]),',
        "    last_look = Sum / ItemCount",
        "| summarize arg_max(last_look, endpoint, deployment, model_version, phase, interval_s) by rollout",
        f"| where phase !in ({', '.join(_string(phase) for phase in sorted(ENDED_PHASES))}) and interval_s > 0",
        "| extend value = (now_ - unixtime_seconds_todatetime(last_look)) / 1s / interval_s",
        f"| where value {rule.condition.op} threshold_",
        "| project endpoint, rollout, deployment, model_version, phase, last_look = "
        "unixtime_seconds_todatetime(last_look),",
        "    interval_s, value = round(value, 1)",
    ]
    return "\n".join(lines) + "\n"
