"""A seeded A/A smoke run: 200 rollouts of a model against itself through the real judge and state machine,
on telemetry resampled from real per-request measurements (bench/data/documents.json.gz). A healthy
candidate must almost never be rolled back; the bench (``python -m bench rollouts``) measures the rate
over thousands of production rollouts."""

from __future__ import annotations

import numpy as np
import pytest

from bench.documents import load
from nerops.rollout.plan import build_plan
from nerops.rollout.policy import load_policy
from nerops.rollout.replay import drive
from nerops.rollout.synthetic import arm_interval
from nerops.telemetry.source import Arm

CAND, STAB = Arm("green", "2"), Arm("blue", "1")


def resampling_traffic(rng, documents, rate, *, latency_factor=1.0):
    """Live requests ~ Poisson(rate x interval), split by the rollout's weight; mirrors copy the same records."""
    pool = np.flatnonzero(documents.of("test"))
    labels = documents.labels

    def rows(arm, start, end, picked, factor=1.0, **extra):
        docs = [{labels[j]: int(c) for j, c in enumerate(documents.label_counts[i]) if c} for i in picked]
        return arm_interval(start, end, arm, latencies=documents.latency_ms[picked] * factor, labels=docs, **extra)

    def traffic(start, end, state, step):
        picked = rng.choice(pool, rng.poisson(rate * (end - start)))
        to_candidate = rng.random(picked.size) < state.weight / 100
        copied = rng.random(picked.size) < state.mirror / 100
        out = {
            "live": [
                rows(CAND, start, end, picked[to_candidate], latency_factor),
                rows(STAB, start, end, picked[~to_candidate]),
            ]
        }
        if state.mirror and step.kind == "shadow":
            shadow = picked[copied]
            out["mirror"] = [rows(CAND, start, end, shadow, latency_factor, compared=shadow.size, differing=0)]
        elif state.mirror and step.kind == "bake":
            out["mirror"] = [rows(STAB, start, end, picked[to_candidate & copied])]
        return out

    return traffic


@pytest.fixture(scope="module")
def demo_plan():
    return build_plan(load_policy()[0], "demo")


def test_200_a_a_rollouts_give_at_most_3_false_rollbacks(demo_plan):
    documents = load()
    outcomes = []
    for seed in range(200):
        rng = np.random.default_rng(seed)
        run = drive(
            demo_plan,
            resampling_traffic(rng, documents, rate=8.0),
            candidate=CAND,
            stable=STAB,
            labels=documents.labels,
        )
        outcomes.append(run.state.phase)
    assert outcomes.count("rolled_back") <= 3
    assert outcomes.count("promoted") >= 190  # enough traffic: the minimum samples are met in time


def test_the_same_traffic_with_a_slower_candidate_is_rolled_back(demo_plan):
    documents = load()
    rolled = 0
    for seed in range(10):
        rng = np.random.default_rng(1000 + seed)
        run = drive(
            demo_plan, resampling_traffic(rng, documents, rate=8.0, latency_factor=2.0), candidate=CAND, stable=STAB
        )
        rolled += run.state.phase == "rolled_back"
        if run.state.phase == "rolled_back":
            assert "latency" in run.state.ending
    assert rolled >= 9
