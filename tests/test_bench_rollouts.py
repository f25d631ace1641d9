"""The rollout simulation bench (bench/rollouts.py): its vectorised judge and state machine agree with the real
ones, rollout by rollout and look by look, and its figures are reproducible."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from bench import rollouts as b


@pytest.fixture(scope="module")
def sim() -> b.Simulator:
    return b.setup()[0]


def test_the_vectorised_rollouts_agree_with_the_real_judge_and_machine(sim):
    report = b.cross_check(sim, b.cross_check_cases(sim.records))
    problems = [f"{r['case']} #{r['rollout']}: {r['problems']}" for r in report if not r["ok"]]
    assert not problems, "\n".join(problems)
    assert all(r["e_values_compared"] > 100 for r in report)  # every enforced test, every look after readiness
    outcomes = {r["case"]: r["outcome"] for r in report}
    assert {outcomes["A/A"], outcomes["A/A, mix shift"]} == {"promoted"}
    assert {r["outcome"] for r in report if not r["case"].startswith("A/A")} == {"rolled_back"}


def test_a_rollback_is_attributed_to_the_metric_that_rejected(sim):
    result = b.simulate(sim, b.Scenario("latency x2", 20, effect=b.Effect("latency", 2.0)), seed=5)
    row = b.summarise(result, sim)
    assert row["power"] >= 0.9
    assert row["by_intended_share"] == 1.0
    assert set(row["causes_by_metric"]) <= set(b.INTENDED["latency"])


def test_simulations_are_seeded(sim):
    scenario = b.Scenario("A/A", 12)
    one, two = b.simulate(sim, scenario, seed=3, chunk=5), b.simulate(sim, scenario, seed=3, chunk=5)
    assert np.array_equal(one.outcome, two.outcome) and np.array_equal(one.decision, two.decision)
    assert np.array_equal(one.candidate_requests, two.candidate_requests)
    assert one.outcome.size == 12 and (one.outcome != b.RUNNING).all()


def test_clopper_pearson_bounds():
    assert b.clopper_pearson(0, 5000)[1] == pytest.approx(1 - 0.05 ** (1 / 5000), rel=1e-9)
    assert b.clopper_pearson(10, 10) == (0.0, 1.0)
    lo, hi = b.clopper_pearson(25, 5000, two_sided=True)
    assert lo < 25 / 5000 < hi
    stats = pytest.importorskip("scipy.stats")
    for k, n in ((1, 500), (25, 5000), (250, 500)):
        assert b.clopper_pearson(k, n)[1] == pytest.approx(stats.beta.ppf(0.95, k + 1, n - k), rel=1e-9)
        lo, hi = b.clopper_pearson(k, n, two_sided=True)
        assert lo == pytest.approx(stats.beta.ppf(0.025, k, n - k + 1), rel=1e-9)
        assert hi == pytest.approx(stats.beta.ppf(0.975, k + 1, n - k), rel=1e-9)


def test_a_small_run_writes_the_json_and_the_plot(tmp_path):
    report = b.run(scale=0.002, results=tmp_path / "r.json", figure=tmp_path / "r.png", check=False)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["policy"]["sha256"] == report["policy"]["sha256"] and len(saved["policy"]["sha256"]) == 64
    assert {row["family"] for row in saved["power"]} == {"errors", "latency", "entities", "label"}
    assert all(math.isfinite(row["rolled_back_share"]) for row in saved["aa"])
    assert (tmp_path / "r.png").stat().st_size > 10_000
