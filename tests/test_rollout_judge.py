"""The health judge, table by table: each verdict, its precedence, and the evidence it leaves."""

from __future__ import annotations

import numpy as np
import pytest

from nerops.rollout.judge import judge
from nerops.rollout.plan import build_plan
from nerops.rollout.policy import load_policy
from nerops.rollout.readiness import smoke_verdict
from nerops.rollout.synthetic import arm_interval, counter, series, with_values
from nerops.rollout.verdicts import Look, StepSpan, worst
from nerops.telemetry.metrics import AGREEMENT_CANDIDATE_ONLY, AGREEMENT_MATCHED, AGREEMENT_REFERENCE_ONLY
from nerops.telemetry.source import Arm, Loss

CAND, STAB = Arm("green", "2"), Arm("blue", "1")
LABELS = ("Name", "Skills", "Degree")
STEP = 60.0


@pytest.fixture(scope="module")
def plan():
    policy, _ = load_policy()
    return build_plan(policy, "production")


def documents(rng, n, *, latency=40.0, entities=1.0, drop=None, errors=0.0):
    """n requests: gamma latencies, negative-binomial (overdispersed) entities per label; some failed."""
    failed = int(rng.binomial(n, errors)) if errors else 0
    n -= failed
    lat = rng.gamma(4.0, latency / 4.0, size=n)
    docs = []
    for _ in range(n):
        counts = {label: int(rng.negative_binomial(2, 2 / (2 + 6 * entities))) for label in LABELS}
        docs.append({k: v for k, v in counts.items() if v and k != drop})
    return {"latencies": lat, "labels": docs, "errors": failed}


def make_look(
    plan,
    *,
    seed=0,
    intervals=12,
    rate=120,
    weight=50,
    kind="canary",
    now=None,
    wait_until=None,
    candidate=None,
    mirror=0,
    loss=(),
    source_error=None,
    live=True,
    **extra,
):
    rng = np.random.default_rng(seed)
    rows = {"live": [], "mirror": []}
    for i in range(intervals):
        start, end = i * STEP, (i + 1) * STEP
        n_c = rng.binomial(rate, weight / 100)
        rows["live"].append(arm_interval(start, end, CAND, **documents(rng, n_c, **(candidate or {}))))
        rows["live"].append(arm_interval(start, end, STAB, **documents(rng, rate - n_c)))
        if mirror:
            rows["mirror"].append(arm_interval(start, end, STAB, **documents(rng, int(n_c * mirror / 100))))
    end = intervals * STEP
    built = {cls: series(r, start=0, end=end, step=STEP, traffic_class=cls, loss=loss) for cls, r in rows.items() if r}
    if not live:
        built.pop("live")
    now = end if now is None else now
    return Look(
        now,
        CAND,
        STAB,
        (StepSpan(1, kind, 0.0),),
        wait_until if wait_until is not None else now,
        built,
        source_error=source_error,
        labels=LABELS,
        **extra,
    )


def by_name(verdict):
    return {e.metric: e for e in verdict.metrics}


def test_a_candidate_like_the_stable_one_is_healthy_at_the_end_of_the_wait(plan):
    verdict = judge(make_look(plan), plan)
    assert verdict.status == "healthy", verdict.reason
    assert verdict.window == (0.0, 12 * STEP)
    evidence = by_name(verdict)["latency-mean"]
    assert evidence.candidate_samples > plan.metrics[0].min_samples and evidence.strata == 12
    assert evidence.threshold == pytest.approx(1 / plan.alpha_of(plan.metrics[2]))


def test_before_the_minimum_bake_it_is_inconclusive_and_says_until_when(plan):
    verdict = judge(make_look(plan, wait_until=12 * STEP + 300), plan)
    assert verdict.status == "inconclusive"
    assert "minimum bake until 00:17:00Z (5m left)" in verdict.reason


@pytest.mark.parametrize(
    ("candidate", "metric", "fragment"),
    [
        ({"latency": 80.0}, "latency-mean", "candidate > 1.25 x stable"),
        ({"latency": 80.0}, "latency-distribution", "P(candidate larger) > 0.6"),
        ({"entities": 0.5}, "entities-per-resume", "candidate < 0.85 x stable"),
        ({"drop": "Degree"}, "entities-per-label[Degree]", "candidate < 0.5 x stable"),
        ({"errors": 0.08}, "server-error-rate", "candidate > 1.5 x stable"),
    ],
)
def test_a_worse_candidate_is_unhealthy_and_the_evidence_names_the_metric(plan, candidate, metric, fragment):
    verdict = judge(make_look(plan, candidate=candidate), plan)
    assert verdict.status == "unhealthy"
    evidence = by_name(verdict)[metric]
    assert evidence.status == "unhealthy" and evidence.tested == fragment
    assert evidence.e_value >= evidence.threshold
    assert metric in verdict.reason


def test_a_hard_failure_acts_at_once_without_waiting_for_the_minimum_samples(plan):
    verdict = judge(make_look(plan, intervals=1, rate=120, weight=25, candidate={"errors": 0.5}), plan)
    assert verdict.status == "unhealthy"
    assert verdict.hard_failures and verdict.hard_failures[0].startswith("candidate-server-errors:")
    assert by_name(verdict)["server-error-rate"].status == "no_data"  # the test itself has too few samples


def test_a_candidate_that_answers_nothing_is_rolled_back_by_a_hard_failure_before_its_minimum():
    policy, _ = load_policy()
    plan = build_plan(policy, "production")
    look = make_look(plan, intervals=1, rate=120, weight=25, candidate={"entities": 0.0})
    verdict = judge(look, plan)
    assert verdict.status == "unhealthy"
    assert verdict.hard_failures[0].startswith("candidate-empty-answers:") and "(100%)" in verdict.hard_failures[0]


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [({"candidate_restarts": 3}, "restarted 3 times"), ({"candidate_down": "exit code 1"}, "is down (exit code 1)")],
)
def test_a_crash_loop_or_a_down_deployment_is_unhealthy(plan, extra, fragment):
    verdict = judge(make_look(plan, **extra), plan)
    assert verdict.status == "unhealthy" and fragment in verdict.reason


def test_fewer_than_the_minimum_samples_is_no_data_and_names_the_counts(plan):
    verdict = judge(make_look(plan, intervals=2, rate=20, weight=5), plan)
    assert verdict.status == "no_data"
    assert "fewer than the minimum 100 per arm" in verdict.reason


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"loss": (Loss("dropped_points", 12, 100.0, 130.0),)}, "telemetry loss in (60, 120]: 12 dropped_points"),
        ({"source_error": "Log Analytics answered 503"}, "Log Analytics answered 503"),
        ({"live": False}, "no live series"),
    ],
)
def test_a_failing_or_partial_source_is_error_never_healthy(plan, kwargs, fragment):
    verdict = judge(make_look(plan, **kwargs), plan)
    assert verdict.status == "error"
    assert fragment in verdict.reason and "traffic frozen" in verdict.reason


def test_a_watermark_behind_the_window_is_error():
    policy, _ = load_policy()
    plan = build_plan(policy, "production")
    look = make_look(plan)
    behind = {
        cls: series(s.rows, start=0, end=s.end, step=STEP, traffic_class=cls, watermark=s.end - 30)
        for cls, s in look.series.items()
    }
    verdict = judge(Look(look.now, CAND, STAB, look.steps, look.wait_until, behind, labels=LABELS), plan)
    assert verdict.status == "error" and "watermark" in verdict.reason


def test_unhealthy_takes_precedence_over_error_and_no_data(plan):
    look = make_look(plan, intervals=1, candidate={"errors": 0.6}, loss=(Loss("late_points", 1, 10.0, 20.0),))
    assert judge(look, plan).status == "unhealthy"
    assert worst(["healthy", "no_data", "error", "inconclusive"]) == "error"
    assert worst(["healthy", "inconclusive", "no_data"]) == "no_data"
    assert worst([]) == "healthy"


def test_a_dry_run_metric_is_reported_but_never_decides(plan):
    rows = []
    for i in range(10):
        row = arm_interval(i * STEP, (i + 1) * STEP, CAND, compared=40, differing=39)
        rows.append(
            with_values(
                row,
                {
                    (AGREEMENT_MATCHED, "Skills"): counter(4),
                    (AGREEMENT_CANDIDATE_ONLY, "Skills"): counter(1),
                    (AGREEMENT_REFERENCE_ONLY, "Name"): counter(1),
                },
            )
        )
    look = make_look(plan, kind="canary")
    look = Look(
        look.now,
        CAND,
        STAB,
        look.steps,
        look.wait_until,
        {**look.series, "probe": series(rows, start=0, end=600, step=STEP, traffic_class="probe")},
        labels=LABELS,
    )
    verdict = judge(look, plan)
    agreement = by_name(verdict)["shadow-agreement"]
    assert agreement.mode == "dry_run" and agreement.status == "unhealthy"
    assert agreement.candidate == pytest.approx(39 / 40)
    assert "entity-level agreement F1 0.800 (40 in both, 10 candidate only, 10 stable only)" in agreement.reason
    assert verdict.status == "healthy"


def test_in_the_bake_the_old_deployment_is_read_from_its_mirrored_copies_and_latency_only_by_its_ceiling(plan):
    look = make_look(plan, weight=100, kind="bake", mirror=30, candidate={"latency": 200.0})
    verdict = judge(look, plan)
    evidence = by_name(verdict)
    assert evidence["entities-per-resume"].stable_samples > 0  # mirrored copies of the old deployment
    assert evidence["latency-mean"].stable_samples == 0  # mirrored latency is not comparable with live
    assert evidence["latency-mean"].status == "healthy"
    assert "not measured in this step" in evidence["latency-mean"].reason
    assert evidence["latency-ceiling"].candidate == pytest.approx(200.0, rel=0.1)  # the absolute limit reads it
    assert verdict.status == "healthy"


def test_the_statistic_is_recomputed_from_the_whole_series_so_a_resumed_look_reproduces_it(plan):
    first = judge(make_look(plan, seed=5), plan)
    again = judge(make_look(plan, seed=5), plan)
    assert first.to_dict() == again.to_dict()


def test_require_equivalence_holds_the_verdict_at_inconclusive_until_the_bound_is_inside_the_margin():
    policy, _ = load_policy()
    strict = policy.model_copy(
        update={
            "metrics": [
                m.model_copy(update={"require_equivalence": True}) if m.name == "latency-mean" else m
                for m in policy.metrics
            ]
        }
    )
    plan = build_plan(strict, "production")
    small = judge(make_look(plan, intervals=3, rate=70), plan)
    assert small.status == "inconclusive" and "within the margin not shown yet" in small.reason
    large = judge(make_look(plan, intervals=12, rate=600), plan)
    assert large.status == "healthy", large.reason


@pytest.mark.parametrize(
    ("statuses", "expected"),
    [
        ([200, 200, 200], "healthy"),
        ([200, 503, 200], "unhealthy"),
        ([200, None, 200], "error"),
        ([200, 404, 200], "error"),
        ([200], "error"),
    ],
)
def test_readiness_from_smoke_answers(statuses, expected):
    assert smoke_verdict(statuses, required=3, now=0.0).status == expected


def test_an_empty_probe_series_does_not_make_a_step_measure_what_it_cannot(plan):
    """The source answers every traffic class: no probes sent is an empty probe series, not probe data (else
    latency would hold a shadow or bake step at no_data until its deadline)."""
    look = make_look(plan, weight=100, kind="bake", mirror=30)
    empty = series([], start=0, end=600, step=STEP, traffic_class="probe")
    look = Look(look.now, CAND, STAB, look.steps, look.wait_until, {**look.series, "probe": empty})
    verdict = judge(look, plan)
    latency = by_name(verdict)["latency-distribution"]
    assert latency.candidate_samples < latency.min_samples or latency.stable_samples == 0
    assert latency.status == "healthy" and "not measured in this step" in latency.reason
    assert verdict.status == "healthy"
