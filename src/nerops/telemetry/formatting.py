"""Alert results as text: a plain table, and with ``verbose`` the evidence of each (messages, steps, queries)."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from nerops.telemetry.durations import format_duration

if TYPE_CHECKING:
    from nerops.telemetry.results import RuleResult

STATES: tuple[str, ...] = ("firing", "ok", "no_data", "error")


def format_number(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and (math.isinf(value) or math.isnan(value)):
        return str(value)
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    text = f"{value:.2f}" if abs(value) >= 1 or value == 0 else f"{value:.3g}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def _clock(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%H:%M:%S")


def format_results(results: Sequence[RuleResult], *, verbose: bool = False) -> str:
    """A plain-text table, one row per rule x deployment (x label); ``verbose`` adds messages and queries."""
    if not results:
        return "no alert results (no rules, or no deployment with data in the rules' windows)"
    header = ["RULE", "DEPLOYMENT", "STATE", "VALUE", "CONDITION", "SAMPLES", "WINDOW (UTC)"]
    with_labels = any(result.label for result in results)
    if with_labels:
        header.insert(2, "LABEL")
    rows = []
    for result in results:
        condition = "-" if result.threshold is None else f"{result.op} {format_number(result.threshold)}"
        if result.factor is not None:
            condition += f" ({format_number(result.factor)} x baseline {format_number(result.baseline)})"
        steps = max(1, round((result.window_end - result.window_start) / result.window_s)) if result.window_s else 1
        window = (
            f"{steps} x {format_duration(result.window_s)} ({_clock(result.window_start)}, {_clock(result.window_end)}]"
        )
        samples = f"{format_number(result.samples)}/{result.min_samples}"
        row = [
            result.rule,
            "(unrouted)" if result.deployment == "" else result.deployment,
            result.state,
            format_number(result.value),
            condition,
            samples,
            window,
        ]
        if with_labels:
            row.insert(2, result.label or "-")
        rows.append(row)
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in (header, *rows)
    ]
    when = datetime.fromtimestamp(results[0].window_end, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    tally = {state: sum(result.state == state for result in results) for state in STATES}
    counts = ", ".join(f"{count} {state}" for state, count in tally.items() if count)
    lines.insert(0, f"alert rules at {when}: {counts}")
    if verbose:
        for result in results:
            lines.append("")
            tag = " / ".join(part for part in (result.rule, result.deployment or "(unrouted)", result.label) if part)
            lines.append(f"{tag}: {result.state}: {result.message}")
            if result.traffic:
                lines.append(f"  traffic classes read: {', '.join(result.traffic)}")
            if result.for_check:
                lines.append(f"  for: {result.for_check}")
            if result.baseline_start is not None:
                lines.append(
                    f"  baseline: {result.baseline_deployment} over ({_clock(result.baseline_start)}, "
                    f"{_clock(result.baseline_end)}], {format_number(result.baseline_samples)} samples"
                )
            for step in result.steps:
                held = {True: "held", False: "not held", None: "too few samples"}[step.held]
                lines.append(
                    f"  step ({_clock(step.start)}, {_clock(step.end)}]: {format_number(step.value)} "
                    f"({format_number(step.samples)} samples) {held}"
                )
            if result.query:
                lines.append("  query:")
                lines.extend(f"    {line}" for line in result.query.splitlines())
    return "\n".join(lines)


def kql_number(value: float) -> str:
    """A number as a KQL literal (an integer without a decimal point)."""
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def kql_string(value: str) -> str:
    """A string as a KQL literal."""
    return json.dumps(value)
