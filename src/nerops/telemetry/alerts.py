"""Alert rules, one import away: declared once in ``alerts/rules.yaml``, evaluated locally, compiled to KQL.

Where each part lives (this module only re-exports them, for callers such as the CLI and the demo):

    durations.py    "30s" / "5m" / "1h30m" <-> seconds
    rules.py        the schema (Rule, Condition, Baseline), load_rules / parse_rules, RulesError
    assessment.py   assess(steps, baseline, rule) -> Assessment: one rule's firing / ok / no_data, pure
                    (not the rollout's health judge, which weighs many rules' results)
    results.py      RuleResult, StepEvidence, the step and baseline windows
    evaluation.py   evaluate(rules, source, now=...) -> [RuleResult]: reads through the metrics-source port
    formatting.py   format_results: the text table and its evidence
    kql.py          to_kql / scheduled_query_rule: the same rules for Azure Monitor
    staleness.py    aggregation 'staleness' (rollout_stuck): look intervals since a rollout's last look
"""

from __future__ import annotations

from nerops.telemetry.assessment import STATES, Assessment, Measured, State, assess
from nerops.telemetry.durations import Duration, format_duration, parse_duration
from nerops.telemetry.evaluation import ALL_DEPLOYMENTS, evaluate
from nerops.telemetry.formatting import format_number, format_results
from nerops.telemetry.results import RuleResult, StepEvidence, Window, baseline_window, step_windows
from nerops.telemetry.rules import (
    QUANTILES,
    Baseline,
    Condition,
    Rule,
    RulesError,
    RulesFile,
    default_rules_path,
    load_rules,
    parse_rules,
    standalone,
)

__all__ = [
    "ALL_DEPLOYMENTS",
    "QUANTILES",
    "STATES",
    "Assessment",
    "Baseline",
    "Condition",
    "Duration",
    "Measured",
    "Rule",
    "RuleResult",
    "RulesError",
    "RulesFile",
    "State",
    "StepEvidence",
    "Window",
    "assess",
    "baseline_window",
    "default_rules_path",
    "evaluate",
    "format_duration",
    "format_number",
    "format_results",
    "load_rules",
    "parse_duration",
    "parse_rules",
    "standalone",
    "step_windows",
]
