"""Alert rules: declared once in ``alerts/rules.yaml``, evaluated on the local store, compiled to KQL (kql.py).

A rule measures one value per deployment (and per entity label, with ``per_label``) over a ``window``:

    aggregation  value                                       samples (checked against min_samples)
    mean         sum / count of a histogram metric           its measurements (requests, documents)
    p50..p99     quantile estimated from histogram buckets   its measurements
    ratio        sum(numerator) / count(denominator)         the denominator's count
    rate         100 * sum(numerator) / count(denominator)   the denominator's count   (a percentage)

and compares it with a ``condition``: absolute (``{op: ">", threshold: 5}``) or relative to a baseline
(``{op: "<", factor: 0.5, baseline: {window: 1h, offset: 1h}}``: the same deployment over the hour
ending an hour ago; ``deployment: reference`` compares with a reference deployment, e.g. the stable
one during a rollout, passed to :func:`evaluate`).

``for``: the condition must hold in every step of ``window`` covering the last ``for`` (at least one
step). Each step has its own sample count. The decision (:func:`judge`, pure) is a three-valued AND:

- a step (or the baseline) with fewer than ``min_samples`` samples is unknown: never firing;
- any step with enough samples where the condition does not hold -> ``ok``;
- otherwise any unknown step -> ``no_data``; every step known and holding -> ``firing``.

A store failure gives ``error`` for that rule (with the message); :func:`evaluate` never raises for
one rule. Results carry their evidence: queries, windows, values, baseline, samples, threshold.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator
from pydantic_core import PydanticCustomError

from nerops.errors import ConfigurationError
from nerops.telemetry.metrics import METRICS, metric_spec
from nerops.telemetry.store import Aggregate, TelemetryStore

State = Literal["firing", "ok", "no_data", "error"]
STATES: tuple[str, ...] = ("firing", "ok", "no_data", "error")
QUANTILES = {"p50": 0.50, "p90": 0.90, "p95": 0.95, "p99": 0.99}
ALL_DEPLOYMENTS = "*"


def default_rules_path() -> Path:
    """``alerts/rules.yaml`` at the root of the source tree (src/nerops/telemetry/ -> ../../../)."""
    return Path(__file__).resolve().parents[3] / "alerts" / "rules.yaml"


class RulesError(ConfigurationError):
    """The rules file is missing, not YAML, or a rule is invalid: the message names the rule and field."""


# ------------------------------------------------------------------------------------------- durations

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1h30m"``, ``"250ms"`` -> seconds; ``0`` is allowed bare."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "write a duration with its unit, like '30s', '5m' or '1h'")
    text = value.strip().replace(" ", "")
    if not text or _DURATION.sub("", text) != "":
        raise PydanticCustomError(
            "duration", "'{value}' is not a duration: write e.g. '30s', '5m', '1h', '1d' or '1h30m'", {"value": value}
        )
    return sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(text))


def format_duration(seconds: float) -> str:
    """Seconds -> ``"1h30m"``, ``"5m"``, ``"30s"``, ``"250ms"`` (``"0s"`` for zero)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        whole = int(seconds)
        rest = f"{round((seconds - whole) * 1000)}ms"
        return (format_duration(whole) if whole else "") + rest
    parts, left = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]

# ----------------------------------------------------------------------------------------------- rules


class Baseline(BaseModel):
    """The window a relative condition compares with: ``window`` ending ``offset`` before now."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    window: Duration = Field(gt=0)
    offset: Duration | None = None
    deployment: Literal["self", "reference"] = "self"

    @property
    def offset_s(self) -> float:
        """Default: the window just before now's window (self), or the same period (reference)."""
        if self.offset is not None:
            return self.offset
        return self.window if self.deployment == "self" else 0.0


class Condition(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    op: Literal[">", ">=", "<", "<="]
    threshold: float | None = None
    factor: float | None = Field(default=None, gt=0)
    baseline: Baseline | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> Condition:
        if (self.threshold is None) == (self.factor is None):
            raise _field_error("", "give either 'threshold' (absolute) or 'factor' with 'baseline' (relative)")
        if self.factor is not None and self.baseline is None:
            raise _field_error("baseline", "a relative condition ('factor') needs a 'baseline'")
        if self.threshold is not None and self.baseline is not None:
            raise _field_error("baseline", "an absolute condition ('threshold') takes no 'baseline'")
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
    signal: Literal["system", "model"]
    aggregation: Literal["mean", "p50", "p90", "p95", "p99", "ratio", "rate"]
    metric: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    per_label: bool = False
    traffic: Literal["all", "live", "mirrored"] = "all"
    window: Duration = Field(gt=0)
    for_: Duration = Field(default=0.0, alias="for", ge=0)
    min_samples: int = Field(ge=1)
    condition: Condition

    @model_validator(mode="after")
    def _consistent(self) -> Rule:
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
    def mirrored(self) -> bool | None:
        """The store's mirrored filter: None = live and shadow traffic, False = live only, True = shadow only."""
        return {"all": None, "live": False, "mirrored": True}[self.traffic]

    @property
    def expression(self) -> str:
        if self.aggregation in ("ratio", "rate"):
            numerator = f"{self.numerator}[label]" if self.per_label else self.numerator
            text = f"{numerator} / {self.denominator}"
            return f"{text} (%)" if self.aggregation == "rate" else text
        return f"{self.aggregation}({self.metric})"


class RulesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    rules: list[Rule] = Field(min_length=1)


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
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RulesError(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise RulesError(f"{source}: expected a mapping with a 'rules' list at the top, not {type(raw).__name__}")
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


# ---------------------------------------------------------------------------------------------- judge


@dataclass(frozen=True)
class Measured:
    """A value over one window and the samples it rests on (``value`` None: nothing to compute it from)."""

    value: float | None
    samples: float
    start: float = 0.0
    end: float = 0.0


@dataclass(frozen=True)
class Judgement:
    state: State
    threshold: float | None  # what each step's value was compared with (absolute, or factor x baseline)
    held: int  # steps with enough samples where the condition held
    failed: int  # steps with enough samples where it did not
    short: int  # steps with too few samples (unknown)
    reason: str


_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}


def judge(steps: Sequence[Measured], baseline: Measured | None, rule: Rule) -> Judgement:
    """The decision, pure: one :class:`Measured` per step (oldest first) and the baseline if relative."""
    condition, minimum = rule.condition, rule.min_samples
    if not steps:
        return Judgement("no_data", None, 0, 0, 0, "no step to evaluate")
    if condition.relative:
        if baseline is None or baseline.value is None or baseline.samples < minimum:
            got = 0 if baseline is None else baseline.samples
            return Judgement(
                "no_data", None, 0, 0, len(steps), f"baseline has {_num(got)} samples (min {minimum}): cannot compare"
            )
        threshold = condition.factor * baseline.value
        described = f"{condition.op} {_num(threshold)} ({_num(condition.factor)} x baseline {_num(baseline.value)})"
    else:
        threshold = condition.threshold
        described = f"{condition.op} {_num(threshold)}"
    compare = _OPS[condition.op]
    held = failed = short = 0
    for step in steps:
        if step.value is None or step.samples < minimum:
            short += 1
        elif compare(step.value, threshold):
            held += 1
        else:
            failed += 1
    total = len(steps)
    of = f"of {total} step{'s' if total > 1 else ''} of {format_duration(rule.window)}"
    latest = steps[-1]
    if failed:
        reason = f"{_num(latest.value)}: {described} held in {held} {of}, not in {failed}"
        return Judgement("ok", threshold, held, failed, short, reason)
    if short:
        reason = (
            f"{_num(latest.value)}: {short} {of} had fewer than {minimum} samples (latest step: "
            f"{_num(latest.samples)}); {described} held in the other {held}"
        )
        return Judgement("no_data", threshold, held, failed, short, reason)
    return Judgement("firing", threshold, held, 0, 0, f"{_num(latest.value)} {described} in every one {of}")


# ------------------------------------------------------------------------------------------ evaluation


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
            judgement = judge(measured, baseline, rule)
            result = _result(rule, deployment, label, measured, baseline, base_deployment, judgement, query_text)
            results.append(result)
    return results


def _result(
    rule: Rule,
    deployment: str,
    label: str,
    measured: Sequence[Measured],
    baseline: Measured | None,
    base_deployment: str,
    judgement: Judgement,
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
            if m.value is None or m.samples < rule.min_samples or judgement.threshold is None
            else compare(m.value, judgement.threshold),
        )
        for m in measured
    )
    latest = measured[-1]
    what = rule.expression.replace("[label]", f"[{label}]") if label else rule.expression
    for_check = (
        f"condition required in each of {len(steps)} step(s) of {format_duration(rule.window)} covering "
        f"for={format_duration(rule.for_)}: held {judgement.held}, not held {judgement.failed}, "
        f"under {rule.min_samples} samples {judgement.short}"
    )
    return RuleResult(
        rule=rule.name,
        deployment=deployment,
        state=judgement.state,
        message=f"{what} {judgement.reason}",
        severity=rule.severity,
        signal=rule.signal,
        label=label,
        expression=what,
        op=rule.condition.op,
        value=latest.value,
        baseline=None if baseline is None else baseline.value,
        factor=rule.condition.factor,
        threshold=judgement.threshold,
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


# ------------------------------------------------------------------------------------------ formatting


def _num(value: float | None) -> str:
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
        condition = "-" if result.threshold is None else f"{result.op} {_num(result.threshold)}"
        if result.factor is not None:
            condition += f" ({_num(result.factor)} x baseline {_num(result.baseline)})"
        steps = max(1, round((result.window_end - result.window_start) / result.window_s)) if result.window_s else 1
        window = (
            f"{steps} x {format_duration(result.window_s)} ({_clock(result.window_start)}, {_clock(result.window_end)}]"
        )
        samples = f"{_num(result.samples)}/{result.min_samples}"
        row = [
            result.rule,
            "(unrouted)" if result.deployment == "" else result.deployment,
            result.state,
            _num(result.value),
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
            if result.for_check:
                lines.append(f"  for: {result.for_check}")
            if result.baseline_start is not None:
                lines.append(
                    f"  baseline: {result.baseline_deployment} over ({_clock(result.baseline_start)}, "
                    f"{_clock(result.baseline_end)}], {_num(result.baseline_samples)} samples"
                )
            for step in result.steps:
                held = {True: "held", False: "not held", None: "too few samples"}[step.held]
                lines.append(
                    f"  step ({_clock(step.start)}, {_clock(step.end)}]: {_num(step.value)} "
                    f"({_num(step.samples)} samples) {held}"
                )
            if result.query:
                lines.append("  query:")
                lines.extend(f"    {line}" for line in result.query.splitlines())
    return "\n".join(lines)
