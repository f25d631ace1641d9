"""The rollout policy's schema and loading: ``rollouts/policy.yaml`` validated into frozen values.

A policy names what the judge tests (``metrics``), what rolls back without waiting for significance
(``hard_failures``), the false-rollback budget ``alpha`` shared by the enforced metrics, and named
``profiles`` (``production``, ``demo``, ``test``) that set the step plan and its durations. Errors name
the file, the entry and the field (:class:`PolicyError`); :mod:`nerops.rollout.plan` turns one profile
into the :class:`~nerops.rollout.plan.Plan` the state machine walks.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from nerops.errors import ConfigurationError
from nerops.telemetry.durations import Duration
from nerops.telemetry.metrics import LIVE, METRICS, TrafficClass
from nerops.telemetry.rules import _traffic
from nerops.yamlfile import yaml_mapping

PROFILES = ("production", "demo", "test")
Name = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$", max_length=80)]
Traffic = Annotated[tuple[TrafficClass, ...], BeforeValidator(_traffic)]


class PolicyError(ConfigurationError):
    """The policy file is missing, not YAML, or invalid: the message names the entry and the field."""


class Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricPolicy(Frozen):
    """One tested metric. ``kind`` picks the test (see :mod:`nerops.rollout.sequential`):

    ``rate``          numerator / denominator counters, candidate against stable (ratio test);
                      ``margin``: how much higher (or lower) the candidate's rate may be, relative (0.5: 1.5x)
    ``mean``          a histogram's mean, or a labelled counter per document with ``per_label``; relative margin
    ``distribution``  a histogram at bucket resolution (Mann-Whitney): ``margin`` is how far P(candidate's
                      value is the larger) may exceed 1/2
    ``agreement``     the share of mirrored or probe documents whose entities differ from the stable answer,
                      at most ``threshold`` (the candidate alone, read where the pairs are recorded)
    ``ceiling``       an absolute limit on the candidate alone: a rate (``threshold`` as a share, 0.02 = 2 %)
                      or a histogram's mean
    """

    name: Name
    description: str = Field(min_length=1)
    kind: Literal["rate", "mean", "distribution", "agreement", "ceiling"]
    metric: str | None = None
    numerator: str | None = None
    denominator: str | None = None
    per_label: bool = False
    direction: Literal["higher", "lower", "either"] = "higher"  # which way is worse
    margin: float = Field(default=0.0, ge=0.0)
    threshold: float | None = None
    alpha_share: float = Field(gt=0.0, le=1.0)
    mode: Literal["enforce", "dry_run"] = "enforce"
    min_samples: int = Field(ge=1)
    traffic: Traffic = (LIVE,)
    require_equivalence: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> MetricPolicy:
        counters = self.kind in ("rate", "ceiling") and self.metric is None
        if counters:
            for name in ("numerator", "denominator"):
                _known(name, getattr(self, name), histogram=False)
        elif self.kind != "agreement":
            _known("metric", self.metric, histogram=not self.per_label)
        if self.kind in ("agreement", "ceiling") and self.threshold is None:
            raise _error("threshold", f"a '{self.kind}' metric needs a 'threshold'")
        if self.kind in ("agreement", "ceiling") and (self.require_equivalence or self.direction != "higher"):
            raise _error("direction", f"a '{self.kind}' metric is one-sided (higher is worse)")
        share = self.kind == "agreement" or (self.kind == "ceiling" and counters)
        if share and not 0.0 < (self.threshold or 0.0) < 1.0:
            raise _error("threshold", "a share: between 0 and 1 (0.02 is 2 %)")
        if self.kind == "distribution" and not self.margin < 0.5:
            raise _error("margin", "P(candidate larger) - 1/2 can be at most 0.5: take less than 0.5")
        if self.kind == "rate" and self.direction != "higher" and self.margin >= 1.0:
            raise _error("margin", "a rate 'lower' by 100 % or more is never tested: take less than 1")
        if self.require_equivalence and self.margin <= 0.0:
            raise _error("margin", "'require_equivalence' needs a margin above 0")
        if self.per_label and self.kind != "mean":
            raise _error("per_label", "only for kind 'mean' over a labelled counter")
        return self

    @property
    def enforced(self) -> bool:
        return self.mode == "enforce"

    @property
    def two_arms(self) -> bool:
        return self.kind in ("rate", "mean", "distribution")


class HardFailure(Frozen):
    """Rolls back at once, without a statistical test: ``share`` of the candidate's ``numerator`` per
    ``denominator`` at least ``at_least`` over at least ``min_samples`` in the last ``window``; or
    ``restarts``: the candidate's workers restarted at least ``at_least`` times since the rollout began
    (a crash loop), or its deployment is down."""

    name: Name
    description: str = Field(min_length=1)
    kind: Literal["share", "restarts"]
    numerator: str | None = None
    denominator: str | None = None
    at_least: float = Field(gt=0.0)
    min_samples: int = Field(default=1, ge=1)
    window: Duration = Field(default=300.0, gt=0)
    traffic: Traffic = (LIVE,)

    @model_validator(mode="after")
    def _consistent(self) -> HardFailure:
        if self.kind == "share":
            for name in ("numerator", "denominator"):
                _known(name, getattr(self, name), histogram=False)
            if self.at_least > 1.0:
                raise _error("at_least", "a share: at most 1 (0.2 is 20 %)")
        return self


class StepPolicy(Frozen):
    """A canary step: ``weight`` % of live traffic, at least ``wait`` (the minimum bake), at most ``deadline``."""

    weight: int = Field(ge=1, le=100)
    wait: Duration = Field(gt=0)
    deadline: Duration = Field(gt=0)
    on_deadline: Literal["abort", "rollback"] = "abort"


class Readiness(Frozen):
    smoke_requests: int = Field(default=3, ge=1, le=100)
    deadline: Duration = Field(gt=0)
    on_deadline: Literal["abort", "rollback"] = "abort"


class Shadow(Frozen):
    """Before any live traffic: ``mirror`` % of live requests copied to the candidate, answers discarded."""

    mirror: int = Field(ge=1, le=100)
    wait: Duration = Field(gt=0)
    deadline: Duration = Field(gt=0)
    on_deadline: Literal["abort", "rollback"] = "abort"


class Bake(Frozen):
    """After 100 %: ``mirror`` % of live requests copied to the old deployment, kept warm to compare with."""

    mirror: int = Field(default=20, ge=0, le=100)
    wait: Duration = Field(gt=0)
    deadline: Duration = Field(gt=0)
    on_deadline: Literal["abort", "rollback"] = "abort"


class Pause(Frozen):
    """A manual pause without ``--indefinitely`` ends after ``deadline`` with ``on_deadline``."""

    deadline: Duration = Field(gt=0)
    on_deadline: Literal["abort", "resume"] = "abort"


class Approval(Frozen):
    """A rollout started with its approval step on waits, before the first step of at least ``before`` %, for
    ``nerops rollout approve`` (or the flow run's input), the judge running meanwhile; after ``timeout`` it takes
    ``on_timeout``."""

    before: int = Field(default=100, ge=1, le=100)
    timeout: Duration = Field(gt=0)
    on_timeout: Literal["abort", "continue"] = "abort"


class Probes(Frozen):
    """Probe traffic for a quiet service: ``rate`` resumes a second, each pinned to the candidate with the stable
    deployment answering the same resume (traffic class ``probe``: never live), from ``folder`` (``*.xml`` CVs of a
    zip or a folder; default: the test CVs). ``when``: ``short`` while the judge lacks its minimum samples
    (``no_data``), or ``always`` once the candidate is ready."""

    rate: float = Field(gt=0.0, le=50.0)
    folder: str | None = None
    when: Literal["short", "always"] = "short"


class Profile(Frozen):
    interval: Duration = Field(gt=0)  # how often the judge looks: the series' step
    readiness: Readiness
    shadow: Shadow | None = None
    steps: list[StepPolicy] = Field(min_length=1)
    bake: Bake
    pause: Pause
    approval: Approval | None = None  # only a rollout asked to wait for approval uses it
    probes: Probes | None = None  # probe traffic while live traffic is short of the minimum samples
    min_samples: dict[str, int] = Field(default_factory=dict)  # per metric name: overrides for short profiles
    instances: int = Field(default=1, ge=1, le=16)  # the candidate's instances at 100 %
    # how long an owner's claim on a rollout lasts without a look (a dead owner's rollout is taken over after it)
    lease: Duration | None = None  # default: three intervals, at least a minute


class PolicyFile(Frozen):
    version: Literal[1] = 1
    alpha: float = Field(gt=0.0, lt=1.0)
    metrics: list[MetricPolicy] = Field(min_length=1)
    hard_failures: list[HardFailure] = Field(default_factory=list)
    profiles: dict[str, Profile]

    @model_validator(mode="after")
    def _consistent(self) -> PolicyFile:
        missing = [name for name in PROFILES if name not in self.profiles]
        if missing:
            raise _error("profiles", f"missing profile(s) {', '.join(missing)}: define {', '.join(PROFILES)}")
        names = [metric.name for metric in self.metrics] + [rule.name for rule in self.hard_failures]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise _error("metrics", f"duplicate name(s) {', '.join(duplicates)}")
        share = sum(metric.alpha_share for metric in self.metrics if metric.enforced)
        if share > 1.0 + 1e-9:
            raise _error("metrics", f"the enforced metrics' alpha_share add up to {share:g}: at most 1")
        for name, profile in self.profiles.items():
            unknown = sorted(set(profile.min_samples) - {metric.name for metric in self.metrics})
            if unknown:
                raise _error(f"profiles.{name}.min_samples", f"unknown metric(s) {', '.join(unknown)}")
        return self


def _known(field_name: str, name: str | None, *, histogram: bool) -> None:
    spec = METRICS.get(name or "")
    if spec is None:
        raise _error(field_name, f"unknown metric {name!r}: known metrics are {', '.join(sorted(METRICS))}")
    if histogram and not spec.is_histogram:
        raise _error(field_name, f"'{name}' is a counter: this test needs a histogram")
    if not histogram and spec.is_histogram and field_name != "metric":
        raise _error(field_name, f"'{name}' is a histogram: name a counter")


def _error(field_name: str, message: str) -> ValueError:
    return ValueError(f"field '{field_name}': {message}")


def default_policy_path() -> Path:
    """``rollouts/policy.yaml`` at the root of the source tree (src/nerops/rollout/ -> ../../../)."""
    return Path(__file__).resolve().parents[3] / "rollouts" / "policy.yaml"


def load_policy(path: Path | str | None = None) -> tuple[PolicyFile, str]:
    """Read and validate a policy file: ``(policy, its text)`` (the text is what the ledger keeps)."""
    path = Path(path) if path is not None else default_policy_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise PolicyError(f"{path}: cannot read the rollout policy ({exc.strerror or exc})") from exc
    return parse_policy(text, source=str(path)), text


def parse_policy(text: str, *, source: str = "<policy>") -> PolicyFile:
    raw = yaml_mapping(text, source=source, error=PolicyError, expected="'metrics' and 'profiles'")
    try:
        return PolicyFile.model_validate(raw)
    except ValidationError as exc:
        problems = [_describe(error, raw) for error in exc.errors()]
        raise PolicyError(f"{source}: {len(problems)} problem(s)\n  " + "\n  ".join(problems)) from None


def policy_sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _describe(error: Any, raw: dict[str, Any]) -> str:
    loc = [str(part) for part in error["loc"] if not str(part).startswith("function-")]
    if len(loc) >= 2 and loc[0] in ("metrics", "hard_failures") and loc[1].isdigit():
        entries = raw.get(loc[0])
        index = int(loc[1])
        entry = entries[index] if isinstance(entries, list) and index < len(entries) else None
        name = entry.get("name") if isinstance(entry, dict) else None
        loc[:2] = [f"{loc[0]}[{index}]" + (f" '{name}'" if name else "")]
    message = str(error["msg"]).removeprefix("Value error, ")
    got = "" if error["type"] in ("missing", "extra_forbidden", "value_error") else f" (got {error.get('input')!r})"
    where = " > ".join(loc)
    return f"{where}: {message}{got[:120]}" if where else f"{message}{got[:120]}"
