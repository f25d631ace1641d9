"""Thousands of rollouts of the production plan, judged every interval, on telemetry resampled from real requests.

What it measures, for the default ``production`` profile of ``rollouts/policy.yaml`` (readiness, canary
5 / 25 / 50 %, bake 100 % with 20 % mirrored to the old deployment; judged every minute):

    A/A                the false-rollback rate of a model against itself (exact Clopper-Pearson bound), the
                       outcomes (promoted / aborted / rolled back) and the metrics that caused the rollbacks;
                       also with the input mix shifting mid-rollout, and at 10 requests/s
    power              the share of rollouts rolled back against the size of an effect put on the candidate
                       only (server errors, latency, entities per resume, one label missing), the share
                       of those rollbacks caused by the intended metric, and what a detection costs: the
                       candidate's requests and the minutes before the decision

Traffic, per interval and rollout: live requests ~ Poisson(rate x interval); each goes to the candidate with
the probability of the rollout's current weight and resamples, with replacement, one request recorded from
the real endpoint (``bench/data/documents.json.gz``: latency, entities per label; not parametric draws, the
data is overdispersed). In the bake, each of the candidate's live requests is copied with the step's mirror
probability to the old deployment as class ``mirror`` (the same record, so the same entities; its latency
is not compared, as in the judge's pairings). Readiness: one look, the smoke requests pass.

How: the rollouts of a chunk are numpy arrays ([rollouts, looks, statistics]); the machine's rules
(healthy at or after the minimum bake -> next step, deadline -> its ``on_deadline``, unhealthy -> rolled
back) run on per-rollout state arrays look by look, with the judge's minimum samples, its "not measured
in this step" rule and the hard failures. The sequential tests (``nerops.rollout.sequential``, nothing
re-derived) run once per chunk over every look's strata: a rejection ends a rollout at once, so the
trajectory before the first rejection does not depend on the e-values (no enforced metric requires
equivalence; checked) and the first look whose e-value crosses its bound with enough samples is the
decision. A mean test's alternatives scale with the pooled stable mean up to the look (``judge._mean_scale``):
its e-value is computed per look from the running sums of d / v and 1 / v. The cross-check replays a few
rollouts row by row through the real ``judge`` and ``advance`` and requires the same outcome, decision
look, weights, statuses and every enforced e-value (relative 1e-6); the bench runs it first.

What it leaves out:
  - server errors: the recording has none; both arms fail a request with a synthetic Bernoulli 0.5 %
    (a failed request counts as a request and an error, with no latency and no document);
  - latency is the recording's client-side round trip (the endpoint reports no inference time), of one
    model on one machine: a real candidate runs on other instances, possibly slower when cold;
  - one model against itself: the same record gives the same entities in both arms (a real challenger
    differs in every document), and a mirrored copy is the same record as the candidate's request, so
    the bake's pairs are correlated (the test treats the arms as independent: conservative there);
  - no probe traffic, no shadow step, no telemetry loss or outage (never ``error``), no restarts (the
    crash-loop rule never fires), no manual commands;
  - an effect changes one signal only (entities do not change latency); latency effects are a ratio on
    every request.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from bench import documents as recording
from nerops.rollout import sequential as sq
from nerops.rollout.judge import _bounds, judge
from nerops.rollout.machine import advance, start
from nerops.rollout.plan import Plan, build_plan
from nerops.rollout.policy import HardFailure, MetricPolicy, default_policy_path, load_policy, policy_sha256
from nerops.rollout.readiness import smoke_verdict
from nerops.rollout.strata import PAIRINGS, Index
from nerops.rollout.synthetic import arm_interval, labels_of, series
from nerops.rollout.verdicts import Look, StepSpan, Verdict
from nerops.telemetry import metrics as m
from nerops.telemetry.source import Arm, ArmInterval

RESULTS = Path(__file__).parent / "results" / "rollouts.json"
PLOT = Path(__file__).parent / "results" / "rollouts.png"
SEED = 20250917
PROFILE = "production"
RATE = 2.0  # live requests per second
FAST_RATE = 10.0
BASE_ERROR_RATE = 0.005  # synthetic: the recording has no server errors
CHUNK = 500  # rollouts simulated together (the draws depend on it: part of the seed's meaning)
AA_ROLLOUTS, SHIFT_ROLLOUTS, FAST_ROLLOUTS, POWER_ROLLOUTS = 5000, 5000, 2000, 500
SHIFT_STEP = 2  # the A/A mix shift: long training CVs from this step index on
TARGET = 0.01  # the false-rollback target, for the 95 % upper bound
ERROR_RATIOS = (1.5, 2.0, 3.0, 5.0, 10.0)
LATENCY_RATIOS = (1.1, 1.25, 1.5, 2.0)
ENTITY_RATIOS = (0.7, 0.8, 0.85, 0.9, 1.1, 1.15, 1.25)  # 0.85 and 1.15: at the margin (the null's boundary)
REL_TOL = 1e-6
CAND, STAB = Arm("green", "2"), Arm("blue", "1")
KINDS = ("readiness", "shadow", "canary", "bake")
OUTCOMES = ("running", "promoted", "aborted", "rolled_back")
STATUSES = ("healthy", "inconclusive", "no_data", "unhealthy")
HEALTHY, INCONCLUSIVE, NO_DATA, UNHEALTHY = range(4)
RUNNING, PROMOTED, ABORTED, ROLLED_BACK = range(4)
# The judge's fixed alternatives' scales (judge._tests): Mann-Whitney 0.1, a mean ceiling 10 % of its limit.
RANK_SCALE, CEILING_SCALE = 0.1, 0.1
console = Console()


# ---------------------------------------------------------------------------------------------- the inputs


@dataclass(frozen=True)
class Layout:
    """Columns of one arm's statistics in one interval and traffic class (counts and sums, as the source keeps)."""

    labels: int
    buckets: int
    req: int = 0
    err: int = 1
    doc: int = 2
    empty: int = 3
    lat_s: int = 4
    lat_q: int = 5
    ent_s: int = 6
    ent_q: int = 7

    @property
    def lbl_s(self) -> int:
        return 8

    @property
    def lbl_q(self) -> int:
        return 8 + self.labels

    @property
    def bkt(self) -> slice:
        return slice(8 + 2 * self.labels, 8 + 2 * self.labels + self.buckets)

    @property
    def width(self) -> int:
        return 8 + 2 * self.labels + self.buckets

    def counter(self, name: str | None) -> int:
        columns = {
            m.REQUEST_COUNT: self.req,
            m.SERVER_ERROR_COUNT: self.err,
            m.DOCUMENT_COUNT: self.doc,
            m.EMPTY_PREDICTION_COUNT: self.empty,
        }
        if name not in columns:
            raise NotImplementedError(f"the bench simulates no counter {name!r}")
        return columns[name]

    def moments(self, metric: str | None, label: int | None) -> tuple[int, int, int]:
        """(count, sum, sum of squares) columns of a histogram, or of one label's entities per document."""
        if metric == m.ENTITIES_PER_LABEL and label is not None:
            return self.doc, self.lbl_s + label, self.lbl_q + label
        if metric == m.INFERENCE_LATENCY_MS:
            return self.doc, self.lat_s, self.lat_q
        if metric == m.ENTITIES_DETECTED_COUNT:
            return self.doc, self.ent_s, self.ent_q
        raise NotImplementedError(f"the bench simulates no histogram {metric!r}")

    def features(self, latency: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """One row per answered request: its contribution to every column (request, document, sums, bucket)."""
        n = latency.shape[0]
        entities = labels.sum(axis=1)
        out = np.zeros((n, self.width))
        out[:, self.req] = out[:, self.doc] = 1.0
        out[:, self.empty] = entities == 0
        out[:, self.lat_s], out[:, self.lat_q] = latency, latency * latency
        out[:, self.ent_s], out[:, self.ent_q] = entities, entities * entities
        out[:, self.lbl_s : self.lbl_q] = labels
        out[:, self.lbl_q : self.lbl_q + self.labels] = labels * labels
        bucket = np.searchsorted(np.asarray(m.LATENCY_BOUNDS_MS), latency, side="left")  # as bucket_counts
        out[np.arange(n), self.bkt.start + bucket] = 1.0
        return out


class Records:
    """The recording as the simulation reads it: per request its latency and entities per label; two pools."""

    def __init__(self, docs: recording.Documents) -> None:
        self.labels: tuple[str, ...] = docs.labels
        self.latency = np.asarray(docs.latency_ms, dtype=float)
        self.counts = np.asarray(docs.label_counts, dtype=float)
        test, train = np.flatnonzero(docs.of("test")), np.flatnonzero(docs.of("train_long"))
        self.order = np.concatenate([test, train])  # a pool is a contiguous range of this order
        self.pools = {"test": (0, test.size), "train_long": (test.size, train.size)}
        self.meta = docs.meta
        self.size = len(docs)

    def by_frequency(self, pool: str = "test") -> list[str]:
        """Labels from the most to the least entities per document in a pool."""
        off, n = self.pools[pool]
        mean = self.counts[self.order[off : off + n]].mean(axis=0)
        return [self.labels[i] for i in np.argsort(-mean, kind="stable")]


@dataclass(frozen=True)
class Effect:
    """A change to the candidate only: server errors, latency or entities x ratio, or one label missing."""

    family: str = "none"  # none | errors | latency | entities | label
    ratio: float = 1.0
    label: str | None = None

    def describe(self) -> str:
        if self.family == "none":
            return "none (A/A)"
        if self.family == "label":
            return f"label {self.label} missing"
        return f"{self.family} x{self.ratio:g}"


@dataclass(frozen=True)
class Scenario:
    name: str
    rollouts: int
    rate: float = RATE
    effect: Effect = field(default_factory=Effect)
    shift_step: int | None = None  # from this step index on, both arms read the long training CVs

    @property
    def aa(self) -> bool:
        return self.effect.family == "none"


# ------------------------------------------------------------------------------------ the judge, vectorised


@dataclass(frozen=True)
class Test:
    """One piece of evidence the judge reports: a metric (one label, one side) and its rejection bound."""

    name: str
    side: str
    bound: float
    limit: float  # log(1 / alpha) of this side and label
    label: int | None


@dataclass(frozen=True)
class Metric:
    """An enforced metric as the bench reads it: which steps pair its arms, which count as measured."""

    policy: MetricPolicy
    paired: np.ndarray  # per KINDS: the step's strata count for this metric
    measured: np.ndarray  # per KINDS: the judge's measured_now (few samples there -> no_data, else not counted)
    samples: int  # the column of the samples compared with min_samples
    tests: tuple[Test, ...]


def _paired(metric: MetricPolicy, kind: str) -> bool:
    """Whether a step's pairing counts for a metric (strata.Index.cells; the bench sends no probe traffic)."""
    classes = set(metric.traffic)
    if not metric.two_arms:
        return m.LIVE in classes  # one arm: the candidate's live rows (it has no mirror rows without a shadow)
    return any({c, s} <= classes for c, s in PAIRINGS[kind])


def _measured(metric: MetricPolicy, kind: str) -> bool:
    """The judge's own rule, asked on a look in a step of that kind with live and mirror series."""
    look = Look(
        60.0,
        CAND,
        STAB,
        (StepSpan(0, kind, 0.0),),  # type: ignore[arg-type]
        60.0,
        {cls: series([], start=0.0, end=60.0, step=60.0, traffic_class=cls) for cls in (m.LIVE, m.MIRROR)},
    )
    rule = getattr(Index(look), "measured_now", None)
    return True if rule is None else bool(rule(metric))  # without the rule, a step with few samples is no_data


def _metrics(plan: Plan, layout: Layout, labels: Sequence[str]) -> tuple[Metric, ...]:
    out = []
    for metric in plan.metrics:
        if not metric.enforced:
            continue  # dry-run metrics never decide
        if metric.require_equivalence or metric.kind == "agreement":
            raise NotImplementedError(f"{metric.name}: the bench does not simulate {metric.kind} / equivalence")
        if metric.kind in ("rate", "ceiling") and metric.metric is None:
            samples = layout.counter(metric.denominator)
            layout.counter(metric.numerator)
        else:
            samples = layout.moments(metric.metric, 0 if metric.per_label else None)[0]
        sides = _bounds(metric)
        names: list[tuple[str, int | None]] = (
            [(f"{metric.name}[{label}]", i) for i, label in enumerate(labels)]
            if metric.per_label
            else [(metric.name, None)]
        )
        limit = sq.threshold(plan.alpha_of(metric) / len(sides) / max(len(names), 1))
        tests = tuple(Test(name, side, bound, limit, i) for name, i in names for side, bound, _, _ in sides)
        out.append(
            Metric(
                metric,
                np.array([_paired(metric, kind) for kind in KINDS]),
                np.array([_measured(metric, kind) for kind in KINDS]),
                samples,
                tests,
            )
        )
    return tuple(out)


def _mean_scales(c: np.ndarray, s: np.ndarray, cols: tuple[int, int, int], margin: float) -> np.ndarray:
    """judge._mean_scale at every look: the margin (at least 10 %) of the pooled stable mean up to the look."""
    n, total = cols[0], cols[1]
    level_s = np.abs(np.cumsum(s[..., total], axis=-1) / np.maximum(np.cumsum(s[..., n], axis=-1), 1.0))
    level_c = np.abs(np.cumsum(c[..., total], axis=-1) / np.maximum(np.cumsum(c[..., n], axis=-1), 1.0))
    level = np.where(level_s != 0, level_s, np.where(level_c != 0, level_c, 1.0))
    return max(margin, 0.1) * level


def _mean_path(d: np.ndarray, v: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``sq.mean_test`` at every look with that look's scale: its mixture reads the running sums of d / v and
    1 / v only, so each look is one stratum (d = S / P, v = 1 / P) with its own scale."""
    usable = np.isfinite(d) & np.isfinite(v) & (v > 0)
    precision = np.where(usable, 1.0 / np.where(usable, v, 1.0), 0.0)
    s = np.cumsum(np.where(usable, d, 0.0) * precision, axis=-1)
    p = np.cumsum(precision, axis=-1)
    some = p > 0
    d_look = np.where(some, s / np.where(some, p, 1.0), np.nan)
    v_look = np.where(some, 1.0 / np.where(some, p, 1.0), np.nan)
    return sq.mean_test(d_look[..., None], v_look[..., None], scale)[..., 0]


def _path(metric: Metric, test: Test, c: np.ndarray, s: np.ndarray, layout: Layout) -> np.ndarray:
    """The test's log e-value at every look, [rollouts, looks], from the paired strata (zeros elsewhere add 0)."""
    p = metric.policy
    sign = 1 if test.side == "up" else -1
    if p.kind in ("rate", "ceiling") and p.metric is None:
        x, e = layout.counter(p.numerator), layout.counter(p.denominator)
        if p.kind == "ceiling":
            return sq.proportion_test(c[..., x], c[..., e], test.bound)
        if test.side == "up":
            return sq.ratio_test(c[..., x], c[..., e], s[..., x], s[..., e], test.bound)
        return sq.ratio_test(s[..., x], s[..., e], c[..., x], c[..., e], 1.0 / test.bound)
    if p.kind == "distribution":
        if p.metric != m.INFERENCE_LATENCY_MS:
            raise NotImplementedError(f"{p.name}: the bench keeps buckets of latency only")
        d, v = sq.rank_increments(c[..., layout.bkt], s[..., layout.bkt], test.bound, sign)
        return sq.mean_test(d, v, RANK_SCALE)
    n, total, sumsq = layout.moments(p.metric, test.label)
    if p.kind == "ceiling":
        d, v = sq.one_sample_increments(c[..., n], c[..., total], c[..., sumsq], p.threshold or 0.0)
        return sq.mean_test(d, v, CEILING_SCALE * (p.threshold or 1.0))
    d, v = sq.mean_increments(
        c[..., n], c[..., total], c[..., sumsq], s[..., n], s[..., total], s[..., sumsq], test.bound, sign
    )
    return _mean_path(d, v, _mean_scales(c, s, (n, total, sumsq), p.margin))


# ------------------------------------------------------------------------------------------- the simulation


@dataclass
class Chunk:
    """A chunk of rollouts after the simulation and the tests."""

    outcome: np.ndarray  # [R] OUTCOMES index
    decision: np.ndarray  # [R] the look that ended the rollout (looks if it never ended)
    causes: np.ndarray  # [R, causes] what made the decision look unhealthy (tests, then hard failures)
    candidate_requests: np.ndarray  # [R] live requests routed to the candidate (errors included) up to the decision
    decision_step: np.ndarray  # [R] the step index at the decision
    weights: list[tuple[int, ...]]
    status: np.ndarray  # [R, looks] STATUSES index (-1 after the end)
    paths: dict[str, np.ndarray]  # "<evidence name>#<i>" -> [R, looks] log e-value
    peak: np.ndarray  # [R, metrics] the highest log e-value a metric's tests reached with enough samples
    traces: list[list[dict]] | None = None


class Simulator:
    """The production plan's rollouts, vectorised over a chunk; :meth:`chunk` runs one."""

    def __init__(self, plan: Plan, records: Records) -> None:
        kinds = [step.kind for step in plan.steps]
        if "shadow" in kinds or any(s.kind == "bake" and s.weight != 100 for s in plan.steps):
            raise NotImplementedError("the bench simulates readiness, canary steps and a 100 % bake only")
        self.plan, self.records = plan, records
        self.layout = Layout(len(records.labels), len(m.LATENCY_BOUNDS_MS) + 1)
        self.metrics = _metrics(plan, self.layout, records.labels)
        self.rules: tuple[HardFailure, ...] = tuple(r for r in plan.hard_failures if r.kind == "share")
        for rule in self.rules:
            self.layout.counter(rule.numerator), self.layout.counter(rule.denominator)
        self.kind = np.array([KINDS.index(s.kind) for s in plan.steps])
        self.weight = np.array([s.weight for s in plan.steps], dtype=float)
        self.mirror = np.array([s.mirror if s.kind == "bake" else 0 for s in plan.steps], dtype=float)
        self.wait = np.array([s.wait for s in plan.steps], dtype=float)
        self.deadline = np.array([s.deadline for s in plan.steps], dtype=float)
        self.rollback_at_deadline = np.array([s.on_deadline == "rollback" for s in plan.steps])
        horizon = sum(s.deadline for s in plan.steps) + plan.interval  # replay.drive's default horizon
        self.looks = math.ceil(horizon / plan.interval)
        self.tests = [(metric, test) for metric in self.metrics for test in metric.tests]
        self.keys = _keys([test.name for _, test in self.tests])  # as the judge's evidence, in its order
        self.causes: list[Cause] = []
        for metric, test in self.tests:
            label = f"{test.name} ({SIDE[test.side]})" if metric.policy.direction == "either" else test.name
            self.causes.append(Cause(label, metric.policy.name, test.name))
        self.causes += [Cause(rule.name, rule.name, rule.name) for rule in self.rules]
        self.causes.append(Cause("deadline", "deadline", ""))  # a step whose on_deadline is rollback
        self.stable_features = self.layout.features(records.latency, records.counts)

    # -- traffic

    def _candidate_values(self, effect: Effect, rec: np.ndarray, rng: np.random.Generator):
        """The candidate's latency and entities per label for the records it answered, with the effect."""
        latency = self.records.latency[rec] * (effect.ratio if effect.family == "latency" else 1.0)
        counts = self.records.counts[rec]
        if effect.family == "label":
            counts = counts.copy()
            counts[:, self.records.labels.index(effect.label or "")] = 0.0
        elif effect.family == "entities" and effect.ratio < 1:  # each entity kept with probability ratio
            counts = rng.binomial(counts.astype(np.int64), effect.ratio).astype(float)
        elif effect.family == "entities" and effect.ratio > 1:  # + Poisson((ratio - 1) x count) of each label
            counts = counts + rng.poisson((effect.ratio - 1.0) * counts)
        return latency, counts

    def _arm(self, size: int, roll: np.ndarray, rec: np.ndarray, fail: np.ndarray, features: np.ndarray | None):
        """One arm's statistics per rollout: requests and errors, plus the answered documents' sums.

        ``features``: one row per record (the answer is the record's); None: requests and errors only (the
        caller adds the sums of answers drawn per request)."""
        out = np.zeros((size, self.layout.width))
        failed = np.bincount(roll[fail], minlength=size)
        ok = ~fail
        if features is not None:
            n = self.records.size
            answered = np.bincount(roll[ok] * n + rec[ok], minlength=size * n).reshape(size, n)
            out += answered.astype(float) @ features
        out[:, self.layout.req] += failed
        out[:, self.layout.err] += failed
        return out

    def _segment_sum(self, size: int, roll: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Per rollout, the sum of the rows of its requests (``roll`` sorted)."""
        out = np.zeros((size, rows.shape[1]))
        n = np.bincount(roll, minlength=size)
        if rows.shape[0]:
            starts = np.concatenate(([0], np.cumsum(n)[:-1]))
            nonempty = n > 0
            out[nonempty] = np.add.reduceat(rows, starts[nonempty], axis=0)
        return out

    def _traffic(self, rng, scenario: Scenario, step: np.ndarray, n: np.ndarray, cand_features, trace):
        size, effect, records = n.size, scenario.effect, self.records
        shifted = step >= scenario.shift_step if scenario.shift_step is not None else np.zeros(size, dtype=bool)
        (test_off, test_n), (train_off, train_n) = records.pools["test"], records.pools["train_long"]
        off, length = np.where(shifted, train_off, test_off), np.where(shifted, train_n, test_n)
        n_c = rng.binomial(n, self.weight[step] / 100)
        n_s = n - n_c
        p_c = BASE_ERROR_RATE * (effect.ratio if effect.family == "errors" else 1.0)

        def requests(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            roll = np.repeat(np.arange(size), counts)
            return roll, records.order[off[roll] + rng.integers(0, length[roll])]

        roll_c, rec_c = requests(n_c)
        roll_s, rec_s = requests(n_s)
        fail_c = rng.random(roll_c.size) < p_c
        fail_s = rng.random(roll_s.size) < BASE_ERROR_RATE
        copied = rng.random(roll_c.size) < self.mirror[step][roll_c] / 100
        roll_m, rec_m = roll_c[copied], rec_c[copied]
        fail_m = rng.random(roll_m.size) < BASE_ERROR_RATE
        # the stable stream: its live requests (canary, readiness) or the mirrored copies (bake): never both
        stable = self._arm(
            size,
            np.concatenate([roll_s, roll_m]),
            np.concatenate([rec_s, rec_m]),
            np.concatenate([fail_s, fail_m]),
            self.stable_features,
        )
        ok = ~fail_c
        if cand_features is not None:
            candidate = self._arm(size, roll_c, rec_c, fail_c, cand_features)
            lat_c, lab_c = self._candidate_values(effect, rec_c[ok], rng) if trace else (None, None)
        else:  # per request draws: entities x ratio
            lat_c, lab_c = self._candidate_values(effect, rec_c[ok], rng)
            candidate = self._arm(size, roll_c, rec_c, fail_c, None)
            candidate += self._segment_sum(size, roll_c[ok], self.layout.features(lat_c, lab_c))
        if not trace:
            return candidate, stable, None
        rows = []
        for r in range(size):
            mine = roll_c[ok] == r
            live_s, mirror_s = (roll_s == r), (roll_m == r)
            rows.append(
                {
                    "candidate": (lat_c[mine], lab_c[mine], int((fail_c & (roll_c == r)).sum())),
                    "stable_live": self._values(rec_s[live_s & ~fail_s], int((fail_s & live_s).sum())),
                    "stable_mirror": self._values(rec_m[mirror_s & ~fail_m], int((fail_m & mirror_s).sum())),
                }
            )
        return candidate, stable, rows

    def _values(self, rec: np.ndarray, errors: int):
        return self.records.latency[rec], self.records.counts[rec], errors

    # -- one chunk

    def chunk(self, scenario: Scenario, size: int, rng: np.random.Generator, *, trace: bool = False) -> Chunk:
        plan, layout, looks = self.plan, self.layout, self.looks
        effect = scenario.effect
        stochastic = effect.family == "entities" and effect.ratio != 1
        cand_features = None
        if not stochastic:
            latency, counts = self._candidate_values(effect, np.arange(self.records.size), rng)
            cand_features = layout.features(latency, counts)
        cand = np.zeros((size, looks, layout.width))
        stab = np.zeros((size, looks, layout.width))
        step_at = np.full((size, looks), -1, dtype=np.int64)
        status = np.full((size, looks), -1, dtype=np.int8)
        hard = np.zeros((len(self.rules), size, looks), dtype=bool)
        few = np.zeros((len(self.metrics), size, looks), dtype=bool)
        samples = np.zeros((len(self.metrics), 2, size))
        step = np.zeros(size, dtype=np.int64)
        wait_until = np.full(size, self.wait[0])
        deadline = np.full(size, self.deadline[0])
        ended = np.zeros(size, dtype=bool)
        end_look = np.full(size, looks, dtype=np.int64)
        outcome = np.full(size, RUNNING, dtype=np.int8)
        traces: list[list[dict]] | None = [[] for _ in range(size)] if trace else None
        now = 0.0
        for k in range(looks):
            active = ~ended
            if not active.any():
                break
            now += plan.interval
            step_at[active, k] = step[active]
            kind = self.kind[step]
            n = rng.poisson(scenario.rate * plan.interval, size) * active
            c_k, s_k, rows = self._traffic(rng, scenario, step, n, cand_features, trace)
            cand[:, k], stab[:, k] = c_k, s_k
            if traces is not None and rows is not None:
                for r in np.flatnonzero(active):
                    traces[r].append({"look": k, "weight": int(self.weight[step[r]]), **rows[r]})
            ready = kind == KINDS.index("readiness")
            fired = np.zeros(size, dtype=bool)
            ends = np.arange(1, k + 2) * plan.interval
            for i, rule in enumerate(self.rules):  # judge.hard_failures: the candidate's rows in the window
                window = ends > now - rule.window
                rows_k = cand[:, : k + 1][:, window] if m.LIVE in rule.traffic else np.zeros((size, 1, layout.width))
                bad = rows_k[..., layout.counter(rule.numerator)].sum(axis=1)
                total = rows_k[..., layout.counter(rule.denominator)].sum(axis=1)
                hard[i, :, k] = (total >= rule.min_samples) & (bad >= rule.at_least * total) & active & ~ready
                fired |= hard[i, :, k]
            no_data = np.zeros(size, dtype=bool)
            for i, metric in enumerate(self.metrics):
                counted = metric.paired[kind]
                samples[i, 0] += c_k[:, metric.samples] * counted
                samples[i, 1] += s_k[:, metric.samples] * counted
                low = samples[i, 0] < metric.policy.min_samples
                if metric.policy.two_arms:
                    low |= samples[i, 1] < metric.policy.min_samples
                few[i, :, k] = low
                no_data |= low & metric.measured[kind]
            code = np.where(fired, UNHEALTHY, np.where(no_data, NO_DATA, np.where(now < wait_until, INCONCLUSIVE, 0)))
            code = np.where(ready, HEALTHY, code)  # readiness: the smoke requests passed
            status[active, k] = code[active]
            # machine.advance (never paused, never frozen: no metrics outage)
            unhealthy = active & (code == UNHEALTHY)
            moving = active & (code == HEALTHY) & (now >= wait_until)
            late = active & ~unhealthy & ~moving & (now >= deadline)
            promote = moving & (step + 1 >= len(plan.steps))
            nxt = moving & ~promote
            outcome[unhealthy] = ROLLED_BACK
            outcome[promote] = PROMOTED
            outcome[late] = np.where(self.rollback_at_deadline[step[late]], ROLLED_BACK, ABORTED)
            step[nxt] += 1
            wait_until[nxt] = now + self.wait[step[nxt]]
            deadline[nxt] = now + self.deadline[step[nxt]]
            done = unhealthy | promote | late
            end_look[done] = k
            ended |= done
        return self._decide(cand, stab, step_at, status, hard, few, outcome, end_look, traces)

    def _decide(self, cand, stab, step_at, status, hard, few, outcome, end_look, traces) -> Chunk:
        """The tests over every look; the first look with a rejection (enough samples) ends the rollout there."""
        size, looks = step_at.shape
        kind_at = np.where(step_at >= 0, self.kind[np.maximum(step_at, 0)], -1)
        alive = np.arange(looks) <= end_look[:, None]
        judged = alive & (kind_at != KINDS.index("readiness"))  # the readiness look reads the smoke requests only
        paths: dict[str, np.ndarray] = {}
        rejects, owner = [], []
        key = iter(self.keys)
        for i, metric in enumerate(self.metrics):
            counted = np.where(kind_at >= 0, metric.paired[np.maximum(kind_at, 0)], False)[..., None]
            c, s = cand * counted, stab * counted
            for test in metric.tests:
                path = _path(metric, test, c, s, self.layout)
                paths[next(key)] = path
                rejects.append(~few[i] & (path >= test.limit) & judged)
                owner.append(i)
        reject = np.stack(rejects) if rejects else np.zeros((0, size, looks), dtype=bool)
        first = np.where(reject.any(axis=(0, 2)), reject.any(axis=0).argmax(axis=1), looks)
        by_test = first <= end_look
        decision = np.minimum(first, end_look)
        final = np.where(by_test, ROLLED_BACK, outcome).astype(np.int8)
        look = np.minimum(decision, looks - 1)
        rows = np.arange(size)
        deadline = (final == ROLLED_BACK) & ~by_test & ~hard[:, rows, look].any(axis=0)
        causes = (
            np.concatenate([reject[:, rows, look].T, hard[:, rows, look].T, deadline[:, None]], axis=1)
            & (final == ROLLED_BACK)[:, None]
        )
        status = status.copy()
        status[alive & (np.arange(looks) > decision[:, None])] = -1
        status[by_test, decision[by_test]] = UNHEALTHY
        before = np.arange(looks) <= decision[:, None]
        candidate_requests = np.where(before, cand[..., self.layout.req], 0.0).sum(axis=1)
        weights = [self._weights(step_at[r, : look[r] + 1], int(final[r])) for r in range(size)]
        peak = np.full((size, len(self.metrics)), -np.inf)
        for j, path in zip(owner, paths.values(), strict=True):
            valid = ~few[j] & judged & before
            peak[:, j] = np.maximum(peak[:, j], np.where(valid, path, -np.inf).max(axis=1))
        return Chunk(
            final, decision, causes, candidate_requests, step_at[rows, look], weights, status, paths, peak, traces
        )

    def _weights(self, steps: np.ndarray, outcome: int) -> tuple[int, ...]:
        """RolloutState.weights: 0, then each new weight entered, then 0 when rolled back or aborted."""
        weights = [0]
        for s in steps[np.r_[True, steps[1:] != steps[:-1]]]:
            w = int(self.weight[s])
            if w != weights[-1]:
                weights.append(w)
        if outcome in (ABORTED, ROLLED_BACK) and weights[-1] != 0:
            weights.append(0)
        return tuple(weights)


@dataclass(frozen=True)
class Cause:
    """What can make a rollback's decisive look unhealthy: a test (one label, one side), a hard failure, a deadline."""

    label: str  # readable: the evidence's name, with the side when the metric is tested both ways
    metric: str  # the policy's metric or rule
    evidence: str  # the judge's evidence name (a label's test: metric[label])


SIDE = {"up": "higher", "down": "lower"}


def _keys(names: Sequence[str]) -> list[str]:
    """Evidence names made unique by their occurrence (a metric tested both ways reports its name twice)."""
    seen: Counter[str] = Counter()
    out = []
    for name in names:
        out.append(f"{name}#{seen[name]}")
        seen[name] += 1
    return out


# ------------------------------------------------------------------------------------------ scenarios


@dataclass
class Result:
    scenario: Scenario
    outcome: np.ndarray
    decision: np.ndarray
    causes: np.ndarray
    candidate_requests: np.ndarray
    decision_step: np.ndarray
    peak: np.ndarray
    seconds: float


def simulate(sim: Simulator, scenario: Scenario, seed: int, chunk: int = CHUNK) -> Result:
    """Every rollout of a scenario, chunk by chunk, each chunk on its own stream of the seed."""
    started = time.perf_counter()
    sizes = [min(chunk, scenario.rollouts - i) for i in range(0, scenario.rollouts, chunk)]
    streams = np.random.SeedSequence(seed).spawn(len(sizes))
    parts = [sim.chunk(scenario, size, np.random.default_rng(s)) for size, s in zip(sizes, streams, strict=True)]
    return Result(
        scenario,
        np.concatenate([p.outcome for p in parts]),
        np.concatenate([p.decision for p in parts]),
        np.concatenate([p.causes for p in parts]),
        np.concatenate([p.candidate_requests for p in parts]),
        np.concatenate([p.decision_step for p in parts]),
        np.concatenate([p.peak for p in parts]),
        time.perf_counter() - started,
    )


def scenarios(records: Records) -> list[Scenario]:
    ranked = records.by_frequency("test")
    chosen = (ranked[0], ranked[len(ranked) // 2], ranked[-1])  # the most common, a middle one, the rarest
    return [
        Scenario("A/A", AA_ROLLOUTS),
        Scenario("A/A, mix shift", SHIFT_ROLLOUTS, shift_step=SHIFT_STEP),
        Scenario(f"A/A, {FAST_RATE:g}/s", FAST_ROLLOUTS, rate=FAST_RATE),
        *(Scenario(f"errors x{r:g}", POWER_ROLLOUTS, effect=Effect("errors", r)) for r in ERROR_RATIOS),
        *(Scenario(f"latency x{r:g}", POWER_ROLLOUTS, effect=Effect("latency", r)) for r in LATENCY_RATIOS),
        *(Scenario(f"entities x{r:g}", POWER_ROLLOUTS, effect=Effect("entities", r)) for r in ENTITY_RATIOS),
        *(Scenario(f"{label} missing", POWER_ROLLOUTS, effect=Effect("label", 0.0, label)) for label in chosen),
    ]


INTENDED = {
    "errors": ("server-error-rate", "error-ceiling", "candidate-server-errors"),
    "latency": ("latency-distribution", "latency-mean", "latency-ceiling"),
    "entities": ("entities-per-resume",),
}


def intended(effect: Effect, sim: Simulator) -> list[int]:
    """The causes an effect is meant to trip: its family's metrics; for a missing label, that label's test."""
    if effect.family == "label":
        return [j for j, c in enumerate(sim.causes) if c.evidence == f"entities-per-label[{effect.label}]"]
    return [j for j, c in enumerate(sim.causes) if c.metric in INTENDED.get(effect.family, ())]


# ------------------------------------------------------------------------------------------ statistics


def _binom_cdf(k: int, n: int, p: float) -> float:
    if p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 1.0 if k >= n else 0.0
    lp, lq, head = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    terms = [head - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * lp + (n - i) * lq for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def _solve(f, lo: float, hi: float) -> float:
    """The root of a decreasing f on [lo, hi] by bisection (to double precision)."""
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if f(mid) > 0:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, confidence: float = 0.95, *, two_sided: bool = False) -> tuple[float, float]:
    """The exact binomial bounds of k / n: (lower, upper); one-sided (the default) gives (0, upper)."""
    if not 0 <= k <= n or n < 1:
        raise ValueError(f"need 0 <= k <= n and n >= 1, not k={k}, n={n}")
    tail = (1.0 - confidence) / (2.0 if two_sided else 1.0)
    upper = 1.0 if k == n else _solve(lambda p: _binom_cdf(k, n, p) - tail, k / n, 1.0)
    if not two_sided or k == 0:
        return 0.0, upper
    lower = _solve(lambda p: tail - (1.0 - _binom_cdf(k - 1, n, p)), 0.0, k / n)
    return lower, upper


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size else None


def _peaks(result: Result, sim: Simulator) -> dict[str, dict[str, float]]:
    """Per enforced metric: the highest e-value its tests reached (with enough samples, up to the decision) in
    the median, the 99th percentile and the worst rollout, beside the bound it is rejected at."""
    out = {}
    for j, metric in enumerate(sim.metrics):
        peak = result.peak[:, j][np.isfinite(result.peak[:, j])]  # -inf: never had its minimum samples
        values = (np.median(peak), np.percentile(peak, 99), peak.max()) if peak.size else (np.nan,) * 3
        out[metric.policy.name] = {
            **{k: float(np.exp(min(v, 700.0))) for k, v in zip(("median", "p99", "max"), values, strict=True)},
            "bound": float(np.exp(metric.tests[0].limit)),
            "rollouts_with_samples": int(peak.size),
        }
    return out


def summarise(result: Result, sim: Simulator) -> dict[str, object]:
    n = result.outcome.size
    counts = {name: int((result.outcome == i).sum()) for i, name in enumerate(OUTCOMES)}
    rolled = result.outcome == ROLLED_BACK
    k = int(rolled.sum())
    causes = result.causes[rolled]
    by_evidence = {sim.causes[j].label: int(c) for j, c in enumerate(causes.sum(axis=0)) if c}
    by_metric: Counter[str] = Counter()
    for row in causes:
        by_metric.update({sim.causes[j].metric for j in np.flatnonzero(row)})
    minutes = (result.decision + 1) * sim.plan.interval / 60.0
    out: dict[str, object] = {
        "scenario": result.scenario.name,
        "effect": result.scenario.effect.describe(),
        "rate_per_s": result.scenario.rate,
        "input_mix": "test CVs"
        if result.scenario.shift_step is None
        else f"test CVs, then the long training CVs from step {result.scenario.shift_step} on (both arms)",
        "rollouts": n,
        "outcomes": counts,
        "rolled_back_share": k / n,
        "rolled_back_ci95": list(clopper_pearson(k, n, two_sided=True)),
        "rolled_back_upper95_one_sided": clopper_pearson(k, n)[1],
        "causes_by_evidence": dict(sorted(by_evidence.items(), key=lambda kv: -kv[1])),
        "causes_by_metric": dict(by_metric.most_common()),
        "rollback_step": dict(sorted(Counter(int(s) for s in result.decision_step[rolled]).items())),
        "median_minutes_to_decision_rolled_back": _median(minutes[rolled]),
        "median_candidate_requests_before_rollback": _median(result.candidate_requests[rolled]),
        "median_minutes_promoted": _median(minutes[result.outcome == PROMOTED]),
        "peak_e_values": _peaks(result, sim),
        "seconds": round(result.seconds, 2),
    }
    if not result.scenario.aa:
        wanted = intended(result.scenario.effect, sim)
        hit = causes[:, wanted].any(axis=1) if wanted else np.zeros(k, dtype=bool)
        out["intended"] = sorted({sim.causes[j].evidence for j in wanted})
        out["intended_metrics"] = sorted({sim.causes[j].metric for j in wanted})
        out["power"] = k / n
        out["by_intended_share"] = float(hit.mean()) if k else None
        out["at_margin_of"] = at_margin(result.scenario.effect, sim)
    else:
        out["meets_target"] = out["rolled_back_upper95_one_sided"] <= TARGET
    return out


# ------------------------------------------------------------------------------------------ cross-check


def _rows(start_: float, end: float, arm: Arm, values, labels: Sequence[str]) -> ArmInterval:
    latency, counts, errors = values
    docs = [labels_of({label: int(c) for label, c in zip(labels, row, strict=True)}) for row in counts]
    return arm_interval(start_, end, arm, latencies=[float(x) for x in latency], labels=docs, errors=errors)


def judge_replay(plan: Plan, trace: list[dict], labels: tuple[str, ...]):
    """replay.drive's loop with ``Look.labels`` set (drive takes no labels): the recorded rows, the real judge
    and the real state machine. Returns the final state and the verdict of every look."""
    horizon = sum(s.deadline for s in plan.steps) + plan.interval
    state, _ = start(plan, endpoint="bench", version="2", attempt=1, candidate="green", stable="blue", now=0.0)
    rows: dict[str, list[ArmInterval]] = {}
    verdicts: list[Verdict] = []
    now = 0.0
    while not state.ended and now < horizon:
        step = plan.steps[state.step]
        end = now + plan.interval
        k = len(verdicts)
        if k >= len(trace) or trace[k]["weight"] != state.weight:
            raise AssertionError(f"look {k}: the judge's rollout is at {state.weight} %, the bench's was not")
        row = trace[k]
        new = {
            m.LIVE: [_rows(now, end, CAND, row["candidate"], labels), _rows(now, end, STAB, row["stable_live"], labels)]
        }
        if step.kind == "bake":
            new[m.MIRROR] = [_rows(now, end, STAB, row["stable_mirror"], labels)]
        for cls, values in new.items():
            rows.setdefault(cls, []).extend(values)
        now = end
        if step.kind == "readiness":
            smoke = [200] * step.smoke_requests  # readiness passes, as in the bench
            verdict = smoke_verdict(smoke, required=step.smoke_requests, now=now, interval=plan.interval)
        else:
            look = Look(
                now,
                CAND,
                STAB,
                state.steps,
                state.wait_until,
                {cls: series(r, start=0.0, end=now, step=plan.interval, traffic_class=cls) for cls, r in rows.items()},
                labels=labels,
            )
            verdict = judge(look, plan)
        state, _ = advance(plan, state, verdict, now)
        verdicts.append(verdict)
    return state, verdicts


def cross_check_cases(records: Records) -> list[tuple[Scenario, int]]:
    """A/A (3 rollouts, and 2 with the mix shift) and effects that should be rolled back, each with its seed."""
    common = records.by_frequency("test")[0]
    return [
        (Scenario("A/A", 3), 101),
        (Scenario("A/A, mix shift", 2, shift_step=SHIFT_STEP), 102),
        (Scenario("latency x2", 2, effect=Effect("latency", 2.0)), 103),
        (Scenario("errors x10", 1, effect=Effect("errors", 10.0)), 104),
        (Scenario("entities x0.7", 1, effect=Effect("entities", 0.7)), 105),
        (Scenario("entities x1.25", 1, effect=Effect("entities", 1.25)), 106),
        (Scenario(f"{common} missing", 1, effect=Effect("label", 0.0, common)), 107),
    ]


def cross_check(sim: Simulator, cases: Sequence[tuple[Scenario, int]]) -> list[dict[str, object]]:
    """Each case's rollouts through the vectorised path and through the real judge and machine, compared."""
    labels = sim.records.labels
    report = []
    for scenario, seed in cases:
        chunk = sim.chunk(scenario, scenario.rollouts, np.random.default_rng(seed), trace=True)
        assert chunk.traces is not None
        for r in range(scenario.rollouts):
            state, verdicts = judge_replay(sim.plan, chunk.traces[r], labels)
            problems: list[str] = []
            decision = int(chunk.decision[r])
            if state.phase != OUTCOMES[chunk.outcome[r]]:
                problems.append(f"outcome {state.phase} != {OUTCOMES[chunk.outcome[r]]}")
            if len(verdicts) - 1 != decision:
                problems.append(f"decision look {len(verdicts) - 1} != {decision}")
            if tuple(state.weights) != chunk.weights[r]:
                problems.append(f"weights {state.weights} != {chunk.weights[r]}")
            compared, worst = 0, 0.0
            for k, verdict in enumerate(verdicts):
                if k <= decision and verdict.status != STATUSES[chunk.status[r, k]]:
                    problems.append(f"look {k}: status {verdict.status} != {STATUSES[chunk.status[r, k]]}")
                evidence = verdict.enforced
                if not evidence:
                    continue
                names = _keys([e.metric for e in evidence])
                if sorted(names) != sorted(sim.keys):
                    problems.append(f"look {k}: evidence {sorted(set(names) ^ set(sim.keys))} differs")
                    continue
                for name, e in zip(names, evidence, strict=True):
                    mine = math.exp(min(float(chunk.paths[name][r, k]), 700.0))
                    compared += 1
                    diff = abs(mine - e.e_value) / max(abs(e.e_value), 1e-300)
                    worst = max(worst, diff)
                    if not math.isclose(mine, e.e_value, rel_tol=REL_TOL, abs_tol=1e-300):
                        problems.append(f"look {k}: {name} e-value {mine:.10g} != judge {e.e_value:.10g}")
            report.append(
                {
                    "case": scenario.name,
                    "seed": seed,
                    "rollout": r,
                    "outcome": state.phase,
                    "looks": len(verdicts),
                    "weights": list(state.weights),
                    "ending": state.ending[:160],
                    "e_values_compared": compared,
                    "max_relative_difference": worst,
                    "ok": not problems,
                    "problems": problems[:10],
                }
            )
    return report


# ------------------------------------------------------------------------------------------ outputs


def plot(power: list[dict[str, object]], aa: dict[str, object], path: Path, margins: dict[str, tuple]) -> None:
    """Power against effect size, one panel per family; the A/A false-rollback rate and the target marked;
    shaded: the effects inside the intended metric's margin (its null: a rollback there is a false one)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    families = [
        ("errors", "server-error rate x (base 0.5 %)"),
        ("latency", "latency x"),
        ("entities", "entities per resume x"),
        ("label", "label missing from every answer"),
    ]
    fig, axes = plt.subplots(2, 2, figsize=(12, 8.5), sharey=True)
    false_rate, upper = float(aa["rolled_back_share"]), float(aa["rolled_back_upper95_one_sided"])  # type: ignore[arg-type]
    for ax, (family, xlabel) in zip(axes.flat, families, strict=True):
        rows = [row for row in power if row["family"] == family]
        if not rows:
            continue
        xs = list(range(len(rows))) if family == "label" else [float(row["ratio"]) for row in rows]  # type: ignore[arg-type]
        ys = [float(row["power"]) for row in rows]  # type: ignore[arg-type]
        lo = [y - float(row["ci95"][0]) for y, row in zip(ys, rows, strict=True)]  # type: ignore[index]
        hi = [float(row["ci95"][1]) - y for y, row in zip(ys, rows, strict=True)]  # type: ignore[index]
        if family == "label":
            ax.bar(xs, ys, yerr=[lo, hi], capsize=4, color="tab:blue", alpha=0.8, label="rolled back (95 % CI)")
            ax.set_xticks(xs, [str(row["label"]) for row in rows])
        else:
            ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, lw=1.5, label="rolled back (95 % CI)")
            low, high = margins.get(family, (1.0, 1.0))
            ax.axvspan(low, high, color="tab:green", alpha=0.12, label="within the margin (null)")
            ax.axvline(1.0, color="grey", lw=0.6)
        for x, y, row in zip(xs, ys, rows, strict=True):
            minutes = row["median_minutes_to_decision_rolled_back"]
            if minutes is not None and y >= 0.05:
                ax.annotate(f"{minutes:.0f} min", (x, y), textcoords="offset points", xytext=(4, -12), fontsize=7)
        ax.axhline(false_rate, color="tab:red", ls="--", lw=1.2, label=f"A/A false rollbacks {false_rate:.2%}")
        ax.axhline(upper, color="tab:red", ls=":", lw=1, label=f"A/A 95 % upper bound {upper:.2%}")
        ax.axhline(TARGET, color="black", ls=":", lw=0.8, label=f"target {TARGET:.0%}")
        names = ", ".join(rows[0]["intended_metrics"])  # type: ignore[arg-type]
        ax.set_title(f"{family}\nintended: {names}", fontsize=10)
        ax.set_xlabel(xlabel)
        ax.set_ylim(-0.03, 1.05)
        ax.grid(alpha=0.3)
    for ax in axes[:, 0]:
        ax.set_ylabel(f"share rolled back ({POWER_ROLLOUTS} rollouts per point)")
    axes[0, 0].legend(loc="center right", fontsize=8)
    fig.text(0.01, 0.005, "labels: median minutes to the rollback", fontsize=8, color="dimgrey")
    fig.suptitle(
        f"Rollouts of the {PROFILE} plan at {RATE:g} requests/s, effect on the candidate only "
        f"(A/A: {aa['rollouts']} rollouts, resampled real requests)",
        fontsize=12,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _pct(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f} %"


def _margins(sim: Simulator) -> dict[str, tuple[float, float]]:
    """Per effect family, the ratios within all its intended rate / mean metrics' margins (their nulls)."""
    out: dict[str, tuple[float, float]] = {}
    for metric in sim.metrics:
        p = metric.policy
        family = next((f for f, names in INTENDED.items() if p.name in names), None)
        if family is None or p.kind not in ("rate", "mean") or p.per_label:
            continue
        low = 1 - p.margin if p.direction in ("lower", "either") else 1.0
        high = 1 + p.margin if p.direction in ("higher", "either") else 1.0
        have = out.get(family, (0.0, math.inf))
        out[family] = (max(have[0], low), min(have[1], high))
    return out


def at_margin(effect: Effect, sim: Simulator) -> list[str]:
    """The intended ratio or mean metrics whose null boundary the effect sits on (e.g. errors x1.5, margin 0.5)."""
    out = []
    for metric in sim.metrics:
        p = metric.policy
        if p.kind not in ("rate", "mean") or p.per_label or p.name not in INTENDED.get(effect.family, ()):
            continue
        sides = {"higher": (1 + p.margin,), "lower": (1 - p.margin,), "either": (1 + p.margin, 1 - p.margin)}
        if any(math.isclose(effect.ratio, bound) for bound in sides[p.direction]):
            out.append(p.name)
    return out


def tables(aa_rows: list[dict], power: list[dict], check: list[dict]) -> list[Table]:
    t1 = Table(title="Cross-check: vectorised path against the real judge and state machine")
    for col in ("case", "rollout", "outcome", "looks", "weights", "e-values", "max rel. diff", "ok"):
        t1.add_column(col, justify="left" if col in ("case", "outcome", "weights") else "right")
    for row in check:
        t1.add_row(
            row["case"], str(row["rollout"]), row["outcome"], str(row["looks"]), "/".join(map(str, row["weights"])),
            str(row["e_values_compared"]), f"{row['max_relative_difference']:.1e}", "yes" if row["ok"] else "NO",
        )  # fmt: skip
    t2 = Table(title=f"A/A: false rollbacks of the {PROFILE} plan (target: 95 % upper bound <= {TARGET:.0%})")
    for col in ("scenario", "rollouts", "promoted", "aborted", "rolled back", "rate", "95 % upper", "met", "causes"):
        t2.add_column(col, justify="left" if col in ("scenario", "causes") else "right")
    for row in aa_rows:
        o = row["outcomes"]
        causes = ", ".join(f"{k} {v}" for k, v in row["causes_by_evidence"].items()) or "-"
        t2.add_row(
            row["scenario"], str(row["rollouts"]), str(o["promoted"]), str(o["aborted"]), str(o["rolled_back"]),
            _pct(row["rolled_back_share"]), _pct(row["rolled_back_upper95_one_sided"]),
            "yes" if row["meets_target"] else "NO", causes,
        )  # fmt: skip
    t_peak = Table(title="A/A: the highest e-value each enforced metric reached (median / 99th percentile / max)")
    t_peak.add_column("metric")
    t_peak.add_column("bound", justify="right")
    for row in aa_rows:
        t_peak.add_column(str(row["scenario"]), justify="right")
    for name, first in aa_rows[0]["peak_e_values"].items() if aa_rows else ():
        cells = [
            "{median:.2g} / {p99:.2g} / {max:.2g}".format(**row["peak_e_values"][name])  # noqa: UP032
            for row in aa_rows
        ]
        t_peak.add_row(name, f"{first['bound']:.3g}", *cells)
    t3 = Table(
        title=f"Power: effect on the candidate only, {POWER_ROLLOUTS} rollouts per point, {RATE:g} requests/s "
        "(candidate requests and minutes to the decision: medians of the rolled-back rollouts; *: at the margin "
        "of the intended metric, the boundary of its null)"
    )
    columns = ("effect", "rolled back", "95 % CI", "by intended", "cand. requests", "minutes", "other causes")
    for col in columns:
        t3.add_column(col, justify="left" if col in ("effect", "other causes") else "right")
    for row in power:
        others = {k: v for k, v in row["causes_by_evidence"].items() if k.split(" (")[0] not in row["intended"]}
        t3.add_row(
            row["effect"] + (" *" if row["at_margin_of"] else ""), _pct(row["power"], 1),
            f"{_pct(row['ci95'][0], 1)} - {_pct(row['ci95'][1], 1)}",
            _pct(row["by_intended_share"], 0),
            "-" if row["median_candidate_requests_before_rollback"] is None
            else f"{row['median_candidate_requests_before_rollback']:.0f}",
            "-" if row["median_minutes_to_decision_rolled_back"] is None
            else f"{row['median_minutes_to_decision_rolled_back']:.0f}",
            ", ".join(f"{k} {v}" for k, v in others.items()) or "-",
        )  # fmt: skip
    return [t1, t2, t_peak, t3]


def setup(profile: str = PROFILE) -> tuple[Simulator, str]:
    policy, text = load_policy()
    plan = build_plan(policy, profile, policy_sha256=policy_sha256(text))
    return Simulator(plan, Records(recording.load())), text


def run(
    *,
    seed: int = SEED,
    scale: float = 1.0,
    results: Path | None = RESULTS,
    figure: Path | None = PLOT,
    out: Console = console,
    check: bool = True,
) -> dict[str, object]:
    """The whole bench; ``scale`` multiplies the rollouts per scenario (1: the committed figures); ``check``:
    run the cross-check first (a disagreement stops the bench before any figure is written)."""
    started = time.perf_counter()
    out = out if out.is_terminal else Console(width=160)  # a log file: keep lines and tables whole
    sim, text = setup()
    timings: dict[str, float] = {}
    checked: list[dict[str, object]] = []
    if check:
        out.print(f"cross-check: {len(cross_check_cases(sim.records))} cases through the real judge ...")
        t0 = time.perf_counter()
        checked = cross_check(sim, cross_check_cases(sim.records))
        timings["cross_check_s"] = round(time.perf_counter() - t0, 2)
        bad = [row for row in checked if not row["ok"]]
        for row in bad:
            out.print(f"[red]cross-check failed[/]: {row['case']} #{row['rollout']}: {'; '.join(row['problems'])}")
        if bad:
            raise SystemExit("the vectorised rollouts disagree with the judge: no figures written")
        out.print(
            f"  agree: {len(checked)} rollouts, {sum(r['e_values_compared'] for r in checked)} e-values and every "
            f"look's status, max relative difference {max(r['max_relative_difference'] for r in checked):.1e} "
            f"({timings['cross_check_s']} s)"
        )
    plan_list = scenarios(sim.records)
    rows = []
    streams = np.random.SeedSequence(seed).generate_state(len(plan_list))
    for i, (scenario, stream) in enumerate(zip(plan_list, streams, strict=True)):
        scenario = Scenario(
            scenario.name,
            max(1, round(scenario.rollouts * scale)),
            scenario.rate,
            scenario.effect,
            scenario.shift_step,
        )
        result = simulate(sim, scenario, int(stream))
        row = summarise(result, sim)
        row["seed"] = int(stream)
        rows.append(row)
        timings[scenario.name] = round(result.seconds, 2)
        o = row["outcomes"]
        out.print(
            f"[{i + 1}/{len(plan_list)}] {scenario.name}: {scenario.rollouts} rollouts in {result.seconds:.1f} s; "
            f"rolled back {o['rolled_back']} ({row['rolled_back_share']:.2%}), promoted {o['promoted']}, "
            f"aborted {o['aborted']}"
        )
    aa_rows = [row for row, sc in zip(rows, plan_list, strict=True) if sc.aa]
    power = []
    for row, sc in zip(rows, plan_list, strict=True):
        if sc.aa:
            continue
        row["family"], row["ratio"], row["label"] = sc.effect.family, sc.effect.ratio, sc.effect.label
        row["ci95"] = row["rolled_back_ci95"]
        power.append(row)
    timings["total_s"] = round(time.perf_counter() - started, 1)
    report = {
        "benchmark": "rollouts",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "seed": seed,
        "rate_per_s": RATE,
        "fast_rate_per_s": FAST_RATE,
        "chunk": CHUNK,
        "rollouts": {row["scenario"]: row["rollouts"] for row in rows},
        "policy": {
            "path": str(default_policy_path().relative_to(Path(__file__).resolve().parents[1])),
            "sha256": policy_sha256(text),
            "profile": PROFILE,
            "alpha": sim.plan.alpha,
            "interval_s": sim.plan.interval,
            "steps": [
                {
                    "kind": s.kind,
                    "weight": s.weight,
                    "mirror": s.mirror,
                    "wait_s": s.wait,
                    "deadline_s": s.deadline,
                    "on_deadline": s.on_deadline,
                }
                for s in sim.plan.steps
            ],
            "enforced_tests": len(sim.tests),
        },
        "recording": {
            "file": "bench/data/documents.json.gz",
            "model": sim.records.meta.get("model"),
            "latency_kind": sim.records.meta.get("latency_kind"),
            "counts": sim.records.meta.get("counts"),
            "labels": list(sim.records.labels),
        },
        "assumptions": {
            "server_errors": f"synthetic: Bernoulli {BASE_ERROR_RATE:.1%} per request in both arms (the recording "
            "has none); a failed request has no latency and no document",
            "traffic": "live requests ~ Poisson(rate x interval); each to the candidate with probability weight / "
            "100; each resamples one recorded request with replacement from the current pool",
            "mirror": "bake: each candidate live request copied to the old deployment with probability mirror / "
            "100 (same record: same entities); mirrored latency is not compared (the judge's pairings)",
            "readiness": "one look, the smoke requests pass",
            "entities_effect": "below 1: each entity kept with probability ratio (binomial thinning per label); "
            "above 1: each label's count c gets Poisson((ratio - 1) x c) more entities (labels a resume "
            "lacks stay absent); latency unchanged",
            "label_effect": "the candidate returns no entity of that label",
            "latency_effect": "every candidate latency x ratio",
            "not_simulated": "probe traffic, shadow, telemetry loss / errors, restarts, manual commands",
            "candidate_requests": "live requests routed to the candidate (errors included) up to the decision look",
        },
        "cross_check": {"rel_tol": REL_TOL, "ran": check, "rollouts": checked},
        "aa": aa_rows,
        "power": power,
        "timings_s": timings,
    }
    if results is not None:
        results.parent.mkdir(parents=True, exist_ok=True)
        results.write_text(json.dumps(report, indent=2, default=_json) + "\n")
    if figure is not None:
        plot(power, aa_rows[0], figure, _margins(sim))
    for table in tables(aa_rows, power, checked):
        out.print(table)
    out.print(
        f"written: {results} and {figure}; {sum(int(r['rollouts']) for r in rows)} rollouts in {timings['total_s']} s "
        f"on {os.cpu_count()} cores"
    )
    return report


def _json(value: object) -> object:
    if isinstance(value, np.integer | np.floating):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON: {type(value).__name__}")


def main() -> None:
    run()


if __name__ == "__main__":
    main()
