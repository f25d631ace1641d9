"""A profile of the policy turned into the step plan the state machine walks, checked, and its preview.

    readiness (0 %, smoke requests pinned by header)
      -> shadow (0 %, a share of live requests mirrored to the candidate; optional)
      -> canary steps (e.g. 5 -> 25 -> 50 %)
      -> bake (100 %, a share mirrored to the old deployment, kept warm)
      -> retire the old deployment, move ``champion``

Every step has a minimum bake (``wait``), an absolute ``deadline`` and the action taken at it
(``on_deadline``). :func:`preview` answers "how long can this take, and does my traffic reach the
minimum samples in time?" before a rollout starts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from nerops.rollout.policy import Approval, HardFailure, MetricPolicy, Pause, PolicyError, PolicyFile, Probes
from nerops.telemetry.durations import format_duration

StepKind = Literal["readiness", "shadow", "canary", "bake"]


@dataclass(frozen=True)
class Step:
    index: int
    kind: StepKind
    weight: int  # the candidate's share of live traffic, %
    mirror: int  # % of live requests copied: to the candidate (shadow) or to the old deployment (bake)
    wait: float  # minimum bake, s (0: none, readiness)
    deadline: float  # s after the step starts
    on_deadline: str
    smoke_requests: int = 0

    @property
    def label(self) -> str:
        return {"readiness": "readiness", "shadow": f"shadow {self.mirror}%", "bake": "bake 100%"}.get(
            self.kind, f"canary {self.weight}%"
        )


@dataclass(frozen=True)
class Plan:
    profile: str
    interval: float
    alpha: float
    steps: tuple[Step, ...]
    metrics: tuple[MetricPolicy, ...]
    hard_failures: tuple[HardFailure, ...]
    pause: Pause
    instances: int
    policy_sha256: str = ""
    lease: float = 60.0  # an owner's claim without a look lasts this long (then the rollout may be taken over)
    approval: Approval | None = None  # the approval step, for a rollout started with it on
    probes: Probes | None = None  # probe traffic (None: the rollout sends none)

    def approval_step(self) -> int | None:
        """The index of the step an approval is asked before (None: this plan has no approval step)."""
        if self.approval is None:
            return None
        return next(s.index for s in self.steps if s.kind in ("canary", "bake") and s.weight >= self.approval.before)

    @property
    def weights(self) -> list[int]:
        return [step.weight for step in self.steps]

    def alpha_of(self, metric: MetricPolicy) -> float:
        return self.alpha * metric.alpha_share

    def instances_for(self, weight: int) -> int:
        """The candidate's instances when it takes ``weight`` %: proportional, at least one."""
        return max(1, math.ceil(self.instances * weight / 100))


def build_plan(policy: PolicyFile, profile: str, *, policy_sha256: str = "") -> Plan:
    """The plan of one profile, validated (:class:`PolicyError` names the profile and the step)."""
    if profile not in policy.profiles:
        raise PolicyError(f"unknown rollout profile {profile!r}: choose from {', '.join(sorted(policy.profiles))}")
    p = policy.profiles[profile]
    r = p.readiness
    steps: list[Step] = [Step(0, "readiness", 0, 0, 0.0, r.deadline, r.on_deadline, r.smoke_requests)]
    if p.shadow is not None:
        s = p.shadow
        steps.append(Step(len(steps), "shadow", 0, s.mirror, s.wait, s.deadline, s.on_deadline))
    for step in p.steps:
        kind: StepKind = "bake" if step.weight == 100 else "canary"
        mirror = p.bake.mirror if kind == "bake" else 0
        steps.append(Step(len(steps), kind, step.weight, mirror, step.wait, step.deadline, step.on_deadline))
    if steps[-1].kind != "bake":
        b = p.bake
        steps.append(Step(len(steps), "bake", 100, b.mirror, b.wait, b.deadline, b.on_deadline))
    metrics = tuple(
        metric.model_copy(update={"min_samples": p.min_samples[metric.name]})
        if metric.name in p.min_samples
        else metric
        for metric in policy.metrics
    )
    plan = Plan(
        profile,
        p.interval,
        policy.alpha,
        tuple(steps),
        metrics,
        tuple(policy.hard_failures),
        p.pause,
        p.instances,
        policy_sha256,
        p.lease if p.lease is not None else max(60.0, 3 * p.interval),
        p.approval,
        p.probes,
    )
    problems = validate(plan)
    if problems:
        raise PolicyError(f"rollout profile {profile!r}: {len(problems)} problem(s)\n  " + "\n  ".join(problems))
    return plan


def validate(plan: Plan) -> list[str]:
    """What is wrong with a plan: weights rise and end at 100, waits >= the interval, deadlines >= waits."""
    problems: list[str] = []
    traffic = [step for step in plan.steps if step.kind in ("canary", "bake")]
    weights = [step.weight for step in traffic]
    if any(b <= a for a, b in zip(weights, weights[1:], strict=False)):
        problems.append(f"weights must rise from step to step: {' -> '.join(map(str, weights))}")
    if [step.kind for step in traffic].count("bake") != 1 or weights[-1] != 100:
        problems.append(f"the last step must be 100 % (the bake), once: {' -> '.join(map(str, weights))}")
    if plan.lease < 2 * plan.interval:
        problems.append(
            f"lease {format_duration(plan.lease)} is shorter than two intervals "
            f"({format_duration(2 * plan.interval)}): a live owner would lose its rollout between two looks"
        )
    for step in plan.steps:
        name = f"step {step.index} ({step.label})"
        if step.kind != "readiness" and step.wait < plan.interval:
            problems.append(
                f"{name}: wait {format_duration(step.wait)} is shorter than the judge's interval "
                f"{format_duration(plan.interval)}: the judge would not look once"
            )
        if step.deadline < max(step.wait, plan.interval):
            problems.append(
                f"{name}: deadline {format_duration(step.deadline)} comes before its wait "
                f"{format_duration(max(step.wait, plan.interval))} ends"
            )
    for metric in plan.metrics:
        if metric.enforced and not any(any(_per_second(step, metric, 1.0)) for step in plan.steps):
            problems.append(
                f"metric {metric.name!r} (traffic {', '.join(metric.traffic)}) is measured by no step of this plan: "
                "it would pass without a sample; add a canary step or mark it dry_run"
            )
    if plan.approval is not None and plan.approval.timeout < plan.interval:
        problems.append(
            f"approval: timeout {format_duration(plan.approval.timeout)} is shorter than the interval: "
            "the judge would not look once while it waits"
        )
    if plan.pause.deadline < plan.interval:
        problems.append(f"pause: deadline {format_duration(plan.pause.deadline)} is shorter than the interval")
    return problems


@dataclass(frozen=True)
class PreviewRow:
    step: Step
    candidate_per_minute: float  # requests the candidate answers (live or mirrored)
    stable_per_minute: float
    reached_at: float | None  # s after the step starts when every enforced minimum is met (None: not by the deadline)
    needed: int  # the largest enforced minimum (per arm, whole rollout)


# Which traffic class each arm is read in, per step kind (probes aside): see nerops.rollout.strata.
READ_AS = {"shadow": ("mirror", "live"), "canary": ("live", "live"), "bake": ("live", "mirror")}


def _per_second(step: Step, metric: MetricPolicy, rate: float, probes: float = 0.0) -> tuple[float, float]:
    """Samples per second each arm gives ``metric`` in ``step`` (0 where the step does not measure it), with
    ``probes`` probe pairs a second on top of live traffic where the metric reads class ``probe``."""
    if step.kind not in READ_AS:
        return 0.0, 0.0
    c_cls, s_cls = READ_AS[step.kind]
    c = rate * (step.mirror if step.kind == "shadow" else step.weight) / 100
    s = rate * (step.mirror if step.kind == "bake" else 100 - step.weight) / 100
    if not metric.two_arms:
        c = c if c_cls in metric.traffic else 0.0
        return (c + probes, 0.0) if "probe" in metric.traffic else (c, 0.0)
    c, s = (c, s) if {c_cls, s_cls} <= set(metric.traffic) else (0.0, 0.0)
    return (c + probes, s + probes) if "probe" in metric.traffic else (c, s)


def preview(plan: Plan, rate: float) -> tuple[list[PreviewRow], float]:
    """Per step at ``rate`` live requests/s (and the profile's probe pairs, when it sends probes: counted as
    if sent all along, which ``when: short`` does until the minimum is met): traffic per arm and when every
    enforced metric the step measures has its minimum samples; and the worst case total.

    The judge keeps one test per metric for the whole rollout, so samples add up across steps; a metric
    a step cannot measure (latency in a shadow step) does not hold that step.
    """
    if rate <= 0:
        raise PolicyError(f"request rate must be positive, not {rate}")
    enforced = [m for m in plan.metrics if m.enforced]
    have = {m.name: [0.0, 0.0] for m in enforced}
    rows: list[PreviewRow] = []
    for step in plan.steps:
        probing = plan.probes.rate if plan.probes is not None else 0.0
        flows = {m.name: _per_second(step, m, rate, probing) for m in enforced}
        reached: float | None = None
        if step.kind != "readiness":
            gaps = [0.0]
            for metric in enforced:
                (c, s), (got_c, got_s) = flows[metric.name], have[metric.name]
                if not c:
                    continue
                gaps.append(max(0.0, metric.min_samples - got_c) / c)
                if metric.two_arms:
                    gaps.append(max(0.0, metric.min_samples - got_s) / s if s else math.inf)
            reached = max(gaps) if max(gaps) <= step.deadline else None
            lasts = step.deadline if reached is None else max(step.wait, reached)  # a step waits for its minimum
            for metric in enforced:
                have[metric.name][0] += flows[metric.name][0] * lasts
                have[metric.name][1] += flows[metric.name][1] * lasts
        live_c = rate * (step.mirror if step.kind == "shadow" else step.weight) / 100
        live_s = rate * (step.mirror if step.kind == "bake" else 100 - step.weight) / 100
        needed = max((m.min_samples for m in enforced), default=0)
        rows.append(PreviewRow(step, live_c * 60, live_s * 60, reached, needed))
    return rows, sum(step.deadline for step in plan.steps)


def render_preview(plan: Plan, rate: float) -> str:
    """The preview as text, one line per step, ending with the worst-case total time."""
    rows, worst = preview(plan, rate)
    lines = [
        f"profile {plan.profile}: judge every {format_duration(plan.interval)}, alpha {plan.alpha:g}, "
        f"at {rate:g} requests/s; enforced minimum {rows[0].needed} samples per arm (whole rollout)"
    ]
    if plan.probes is not None:
        source = plan.probes.folder or "the test CVs"
        when = "while short of the minimum" if plan.probes.when == "short" else "after readiness, always"
        lines.append(f"  probes: {plan.probes.rate:g} pairs/s {when}, from {source} (class probe, never live)")
    for row in rows:
        s = row.step
        timing = f"wait {format_duration(s.wait)}, deadline {format_duration(s.deadline)} -> {s.on_deadline}"
        if s.kind == "readiness":
            lines.append(f"  {s.index}. {s.label:<12} {s.smoke_requests} smoke requests; {timing}")
            continue
        met = "minimum met" + (
            " already" if not row.reached_at else f" after {format_duration(math.ceil(row.reached_at))}"
        )
        if row.reached_at is None:
            met = "MINIMUM NOT MET by the deadline: " + (
                "raise the probe rate" if plan.probes else "send probe traffic (probes:) or lower min_samples"
            )
        lines.append(
            f"  {s.index}. {s.label:<12} candidate {row.candidate_per_minute:.1f}/min, "
            f"stable {row.stable_per_minute:.1f}/min; {timing}; {met}"
        )
    lines.append(f"worst case total: {format_duration(worst)} (every step to its deadline)")
    return "\n".join(lines)
