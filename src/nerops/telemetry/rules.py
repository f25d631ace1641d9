"""The alert rules' schema and loading: ``alerts/rules.yaml`` validated into frozen :class:`Rule` values.

Errors name the file, the rule and the field (:class:`RulesError`). Evaluation lives in
:mod:`nerops.telemetry.evaluation`, the pure decision in :mod:`nerops.telemetry.assessment`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from nerops.errors import ConfigurationError
from nerops.telemetry.durations import Duration
from nerops.telemetry.metrics import CONTROLLER, LIVE, METRICS, TRAFFIC_CLASSES, TrafficClass, metric_spec
from nerops.yamlfile import yaml_mapping

QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
DEFAULT_LOOKBACK_S = 86400.0  # staleness: how far back a rollout's last look is searched


def _traffic(value: object) -> object:
    """``traffic: live`` / ``[live, probe]`` / ``all``; version-1 files said ``mirrored`` for the mirror class."""
    if isinstance(value, str):
        return TRAFFIC_CLASSES if value == "all" else (("mirror",) if value == "mirrored" else (value,))
    return tuple(value) if isinstance(value, list | tuple) and value else value


def default_rules_path() -> Path:
    """``alerts/rules.yaml`` at the root of the source tree (src/nerops/telemetry/ -> ../../../)."""
    return Path(__file__).resolve().parents[3] / "alerts" / "rules.yaml"


class RulesError(ConfigurationError):
    """The rules file is missing, not YAML, or a rule is invalid: the message names the rule and field."""


class Baseline(BaseModel):
    """The window a relative condition compares with: ``window`` ending ``offset`` before now.

    ``deployment``: ``self`` (the same deployment), ``endpoint`` (every deployment of the endpoint
    together: a rollout's new deployment is compared with the endpoint's past, not blinded by its own
    missing history) or ``reference`` (the reference deployment, e.g. the stable one, by default in
    the same window: a candidate is judged from its first minute).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = Field(gt=0)
    offset: Duration | None = None
    deployment: Literal["self", "endpoint", "reference"] = "self"

    @property
    def offset_s(self) -> float:
        """Default: the window just before now's window (self, endpoint), or the same period (reference)."""
        if self.offset is not None:
            return self.offset
        return 0.0 if self.deployment == "reference" else self.window


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal[">", ">=", "<", "<="]
    threshold: float | None = None
    factor: float | None = Field(default=None, gt=0)
    margin: float = 0.0  # relative only: compare with factor x baseline + margin (rates near zero)
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        if (self.threshold is None) == (self.factor is None):
            raise _field_error("", "give either 'threshold' (absolute) or 'factor' with 'baseline' (relative)")
        if self.factor is not None and self.baseline is None:
            raise _field_error("baseline", "a relative condition ('factor') needs a 'baseline'")
        if self.threshold is not None and self.baseline is not None:
            raise _field_error("baseline", "an absolute condition ('threshold') takes no 'baseline'")
        if self.threshold is not None and self.margin:
            raise _field_error("margin", "only for a relative condition ('factor' with 'baseline')")
        return self

    @property
    def relative(self) -> bool:
        return self.factor is not None


class Rule(BaseModel):
    """One alert rule (see the module docstring and alerts/rules.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=80)
    description: str = Field(min_length=1)
    severity: Literal["info", "warning", "critical"] = "warning"
    signal: Literal["system", "model", "controller"]
    aggregation: Literal["mean", "p50", "p90", "p95", "p99", "ratio", "rate", "staleness"]
    metric: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    per_label: bool = False
    traffic: Annotated[tuple[TrafficClass, ...], BeforeValidator(_traffic)] = (LIVE,)
    window: Duration = Field(gt=0)
    for_: Duration = Field(default=0.0, alias="for", ge=0)
    min_samples: int = Field(ge=1)
    condition: Condition
    local_only: str | None = None  # only the local store can answer: the name of the rule Azure uses instead
    lookback: Duration | None = Field(default=None, gt=0)  # staleness only: how far back the last point is searched

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
        if not self.traffic:
            raise _field_error("traffic", f"name at least one traffic class ({', '.join(TRAFFIC_CLASSES)})")
        if self.aggregation == "staleness" or self.signal == CONTROLLER:
            return self._staleness()
        if self.lookback is not None:
            raise _field_error("lookback", "only for aggregation 'staleness'")
        if self.aggregation in ("ratio", "rate"):
            for name in ("numerator", "denominator"):
                value = getattr(self, name)
                if value is None:
                    raise _field_error(name, f"aggregation '{self.aggregation}' needs a '{name}' metric")
                self._check_metric(name, value)
            if self.metric is not None:
                raise _field_error("metric", f"aggregation '{self.aggregation}' uses numerator/denominator, not metric")
            if self.per_label and not metric_spec(self.numerator).labelled:
                labelled = ", ".join(name for name, spec in METRICS.items() if spec.labelled)
                raise _field_error("per_label", f"needs a numerator with a label ({labelled})")
        else:
            if self.metric is None:
                raise _field_error("metric", f"aggregation '{self.aggregation}' needs a 'metric'")
            self._check_metric("metric", self.metric)
            if not metric_spec(self.metric).is_histogram:
                histograms = ", ".join(name for name, spec in METRICS.items() if spec.is_histogram)
                raise _field_error(
                    "metric", f"aggregation '{self.aggregation}' needs a histogram metric ({histograms})"
                )
            for name in ("numerator", "denominator"):
                if getattr(self, name) is not None:
                    raise _field_error(name, f"only for aggregation 'ratio' or 'rate', not '{self.aggregation}'")
            if self.per_label:
                raise _field_error("per_label", "only for aggregation 'ratio' or 'rate' over a labelled numerator")
        return self

    def _staleness(self) -> Rule:
        """A controller rule: the age of each rollout's latest timestamp gauge, in its look intervals."""
        if self.aggregation != "staleness":
            raise _field_error("aggregation", "a 'controller' rule measures 'staleness' (intervals since a look)")
        if self.signal != CONTROLLER:
            raise _field_error("signal", "aggregation 'staleness' reads the controller's metrics: signal 'controller'")
        if self.metric is None:
            raise _field_error("metric", "aggregation 'staleness' needs a 'metric'")
        self._check_metric("metric", self.metric)
        spec = metric_spec(self.metric)
        if spec.instrument != "gauge" or spec.unit != "s":
            raise _field_error("metric", "aggregation 'staleness' needs a timestamp gauge (rollout_last_look_time)")
        for name in ("numerator", "denominator"):
            if getattr(self, name) is not None:
                raise _field_error(name, "only for aggregation 'ratio' or 'rate', not 'staleness'")
        if self.per_label:
            raise _field_error("per_label", "only for aggregation 'ratio' or 'rate' over a labelled numerator")
        if self.condition.threshold is None:
            raise _field_error("condition", "aggregation 'staleness' takes an absolute 'threshold' (look intervals)")
        return self

    @property
    def lookback_s(self) -> float:
        """Staleness: how far back each rollout's latest point is searched (default one day)."""
        return self.lookback if self.lookback is not None else DEFAULT_LOOKBACK_S

    def _check_metric(self, field_name: str, name: str) -> None:
        spec = METRICS.get(name)
        if spec is None:
            raise _field_error(field_name, f"unknown metric '{name}': known metrics are {', '.join(sorted(METRICS))}")
        if spec.kind != self.signal:
            raise _field_error(field_name, f"'{name}' is a {spec.kind} metric, not a {self.signal} one (see 'signal')")

    @property
    def steps(self) -> int:
        """How many windows cover the ``for`` duration (at least one)."""
        return max(1, math.ceil(self.for_ / self.window - 1e-9))

    @property
    def quantile(self) -> float | None:
        return QUANTILES.get(self.aggregation)

    @property
    def needs_reference(self) -> bool:
        baseline = self.condition.baseline
        return baseline is not None and baseline.deployment == "reference"

    @property
    def expression(self) -> str:
        if self.aggregation == "staleness":
            return f"intervals since {self.metric}"
        if self.aggregation in ("ratio", "rate"):
            numerator = f"{self.numerator}[label]" if self.per_label else self.numerator
            text = f"{numerator} / {self.denominator}"
            return f"{text} (%)" if self.aggregation == "rate" else text
        return f"{self.aggregation}({self.metric})"


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    rules: list[Rule] = Field(min_length=1)


def standalone(rules: Iterable[Rule]) -> list[Rule]:
    """The rules that need no reference deployment (outside a rollout: the CLI, the dashboard)."""
    return [rule for rule in rules if not rule.needs_reference]


def _field_error(field_name: str, message: str) -> PydanticCustomError:
    return PydanticCustomError("rule_field", "{field}: {message}", {"field": field_name, "message": message})


def load_rules(path: Path | str | None = None) -> list[Rule]:
    """Read and validate a rules file (default: :func:`default_rules_path`)."""
    path = Path(path) if path is not None else default_rules_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"{path}: cannot read the alert rules ({exc.strerror or exc})") from exc
    return parse_rules(text, source=str(path))


def parse_rules(text: str, *, source: str = "<rules>") -> list[Rule]:
    """Validate rules from YAML text; :class:`RulesError` names the file, the rule and the field."""
    raw = yaml_mapping(text, source=source, error=RulesError, expected="a 'rules' list at the top")
    try:
        rules = RulesFile.model_validate(raw).rules
    except ValidationError as exc:
        problems = [_describe(error, raw) for error in exc.errors()]
        raise RulesError(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems)) from None
    seen: set[str] = set()
    for index, rule in enumerate(rules):
        if rule.name in seen:
            raise RulesError(f"{source}: rule '{rule.name}' (rules[{index}]), field 'name': duplicate rule name")
        seen.add(rule.name)
    by_name = {rule.name: rule for rule in rules}
    for index, rule in enumerate(rules):
        substitute = by_name.get(rule.local_only or "")
        if rule.local_only is not None and (substitute is None or substitute.local_only is not None):
            raise RulesError(
                f"{source}: rule '{rule.name}' (rules[{index}]), field 'local_only': name the rule Azure uses "
                f"instead, one of this file that is not local-only itself (not '{rule.local_only}')"
            )
    return rules


def _describe(error: Mapping[str, Any], raw: Mapping[str, Any]) -> str:
    loc = list(error["loc"])
    message = error["msg"]
    ctx = error.get("ctx") or {}
    if error["type"] == "rule_field":
        message = ctx["message"]
    prefix = ""
    if len(loc) >= 2 and loc[0] == "rules" and isinstance(loc[1], int):
        index = loc[1]
        entries = raw.get("rules")
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        prefix = f"rule '{name}' (rules[{index}])" if name else f"rules[{index}]"
        loc = loc[2:]
    path = ".".join(str(part) for part in loc if not str(part).startswith("function-"))
    if error["type"] == "rule_field":
        path = ".".join(part for part in (path, ctx["field"]) if part)
    if error["type"] in ("missing", "rule_field", "extra_forbidden", "duration") or "input" not in error:
        got = ""
    else:
        got = f" (got {error['input']!r})"[:120]
    where = ", ".join(part for part in (prefix, f"field '{path}'" if path else "") if part)
    return f"{where}: {message}{got}" if where else f"{message}{got}"
