"""The anytime-valid sequential tests: each against a brute-force computation on small cases, exact
type-I error by enumeration where the outcomes can be listed, and by simulation under repeated looks."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats

from nerops.rollout import sequential as sq


def brute_binomial_mixture(x, n, p0s, alternatives):
    """log mean_k prod_t Binom(x_t; n_t, p_k,t) / Binom(x_t; n_t, p0_t), at every look, by scipy pmfs."""
    out = []
    for t in range(1, len(x) + 1):
        ratios = []
        for p_alt in alternatives:
            value = 1.0
            for i in range(t):
                value *= stats.binom.pmf(x[i], n[i], p_alt[i]) / stats.binom.pmf(x[i], n[i], p0s[i])
            ratios.append(value)
        out.append(math.log(np.mean(ratios)))
    return np.array(out)


def sigmoid(z):
    return 1.0 / (1.0 + math.exp(-z))


def test_ratio_test_matches_the_binomial_likelihood_ratios_computed_by_hand():
    x_c, e_c = [2, 0, 5, 1], [100, 20, 300, 50]
    x_s, e_s = [3, 1, 4, 0], [900, 80, 700, 50]
    rho0 = 1.5
    n = [a + b for a, b in zip(x_c, x_s, strict=True)]
    p0 = [sigmoid(math.log(rho0) + math.log(c / s)) for c, s in zip(e_c, e_s, strict=True)]
    alts = [[sigmoid(math.log(rho0) + g + math.log(c / s)) for c, s in zip(e_c, e_s, strict=True)] for g in sq.LOG_GRID]
    expected = brute_binomial_mixture(x_c, n, p0, alts)
    np.testing.assert_allclose(sq.ratio_test(x_c, e_c, x_s, e_s, rho0), expected, rtol=1e-10, atol=1e-12)


def test_ratio_test_ignores_intervals_where_an_arm_had_no_exposure():
    with_gap = sq.ratio_test([1, 9, 2], [10, 0, 10], [1, 3, 2], [90, 50, 90])
    without = sq.ratio_test([1, 2], [10, 10], [1, 2], [90, 90])
    assert with_gap[-1] == pytest.approx(without[-1])
    assert with_gap[1] == pytest.approx(with_gap[0])


def test_proportion_test_matches_the_binomial_likelihood_ratios_computed_by_hand():
    x, n, p0 = [3, 0, 7], [10, 4, 12], 0.2
    alts = [[sigmoid(math.log(p0 / (1 - p0)) + g)] * 3 for g in sq.LOG_GRID]
    expected = brute_binomial_mixture(x, n, [p0] * 3, alts)
    np.testing.assert_allclose(sq.proportion_test(x, n, p0), expected, rtol=1e-10)


def test_mean_test_matches_the_product_of_gaussian_likelihood_ratios():
    d, v, scale = np.array([0.4, -0.1, 0.9]), np.array([0.5, 0.2, 0.3]), 0.6
    expected = []
    for t in range(1, 4):
        sd = np.sqrt(v[:t])
        ratios = [np.prod(stats.norm.pdf(d[:t], scale * g, sd) / stats.norm.pdf(d[:t], 0, sd)) for g in sq.MEAN_GRID]
        expected.append(math.log(np.mean(ratios)))
    np.testing.assert_allclose(sq.mean_test(d, v, scale), expected, rtol=1e-10)


def exact_rejection_probability(n, p_true, test, alpha):
    """P(the test ever rejects within these looks) by listing every outcome (x_1..x_T), x_t ~ Binom(n_t, p_t)."""
    total = 0.0
    for outcome in itertools.product(*[range(k + 1) for k in n]):
        path = test(np.array(outcome))
        if path.max() >= sq.threshold(alpha):
            total += math.prod(stats.binom.pmf(x, k, p) for x, k, p in zip(outcome, n, p_true, strict=True))
    return total


@pytest.mark.parametrize("alpha", [0.05, 0.2])
@pytest.mark.parametrize("rho", [1.0, 0.6])  # on the boundary of the null and inside it
def test_ratio_test_type_one_error_under_repeated_looks_is_at_most_alpha_exactly(alpha, rho):
    events = [4, 6, 3, 5, 4]  # events per interval; the candidate's share follows the exposure
    e_c, e_s, rho0 = np.array([10, 40, 25, 60, 50]), np.array([90, 60, 75, 40, 50]), 1.0
    p_true = [sigmoid(math.log(rho) + math.log(c / s)) for c, s in zip(e_c, e_s, strict=True)]
    ns = np.array(events)
    probability = exact_rejection_probability(events, p_true, lambda x: sq.ratio_test(x, e_c, ns - x, e_s, rho0), alpha)
    assert probability <= alpha
    if rho == 1.0 and alpha == 0.2:
        assert probability > 0.01  # the test is not vacuous: it can reject


def test_proportion_test_type_one_error_is_at_most_alpha_exactly():
    n, p0, alpha = [5, 5, 5, 5, 5], 0.3, 0.1
    probability = exact_rejection_probability(n, [p0] * 5, lambda x: sq.proportion_test(x, n, p0), alpha)
    assert 0.001 < probability <= alpha


def test_mean_test_type_one_error_under_200_looks_stays_under_alpha():
    rng = np.random.default_rng(7)
    runs, looks, alpha = 4000, 200, 0.05
    v = rng.uniform(0.5, 2.0, size=(runs, looks))
    d = rng.normal(0.0, np.sqrt(v))
    rejected = (sq.mean_test(d, v, np.full(runs, 0.3)).max(axis=-1) >= sq.threshold(alpha)).mean()
    assert rejected <= alpha
    # and a fixed-horizon z-test looked at every interval rejects far more often
    z = np.cumsum(d / v, axis=-1) / np.sqrt(np.cumsum(1 / v, axis=-1))
    assert (z.max(axis=-1) >= stats.norm.ppf(1 - alpha)).mean() > 3 * alpha


def test_mean_test_detects_a_real_shift():
    rng = np.random.default_rng(3)
    v = np.full((200, 100), 1.0)
    d = rng.normal(0.5, 1.0, size=v.shape)
    assert (sq.mean_test(d, v, np.full(200, 0.5)).max(axis=-1) >= sq.threshold(0.01)).mean() > 0.95


def test_mean_increments_are_the_difference_of_means_with_shrunk_welch_variance():
    values_c, values_s = [3.0, 5.0, 10.0], [2.0, 4.0, 4.0, 6.0, 9.0]
    n_c, n_s = len(values_c), len(values_s)
    d, v = sq.mean_increments(
        [n_c],
        [sum(values_c)],
        [sum(x * x for x in values_c)],
        [n_s],
        [sum(values_s)],
        [sum(x * x for x in values_s)],
        1.2,
    )
    ss_c = sum((x - np.mean(values_c)) ** 2 for x in values_c)
    ss_s = sum((x - np.mean(values_s)) ** 2 for x in values_s)
    pooled = (ss_c + ss_s) / (n_c + n_s - 2)
    var_c = (ss_c + sq.SHRINK * pooled) / (n_c - 1 + sq.SHRINK)
    var_s = (ss_s + sq.SHRINK * pooled) / (n_s - 1 + sq.SHRINK)
    assert d[0] == pytest.approx(np.mean(values_c) - 1.2 * np.mean(values_s))
    assert v[0] == pytest.approx(var_c / n_c + 1.44 * var_s / n_s)
    d, v = sq.mean_increments([1], [3.0], [9.0], [5], [25.0], [139.0], 1.0)
    assert np.isnan(d[0]) and np.isnan(v[0])  # one measurement: no information


def test_rank_increments_agree_with_pairwise_counting_and_the_permutation_variance():
    a = np.array([1, 0, 2, 1])  # bucket counts, candidate
    b = np.array([2, 2, 1, 0])
    values_a = np.repeat(np.arange(4), a)
    values_b = np.repeat(np.arange(4), b)
    pairs = [(x > y) + 0.5 * (x == y) for x in values_a for y in values_b]
    d, v = sq.rank_increments(a[None, :], b[None, :], 0.5)
    assert d[0] + 0.5 == pytest.approx(np.mean(pairs))
    pooled = np.concatenate([values_a, values_b])
    us = []
    for chosen in itertools.combinations(range(len(pooled)), len(values_a)):
        rest = [i for i in range(len(pooled)) if i not in chosen]
        us.append(sum((pooled[i] > pooled[j]) + 0.5 * (pooled[i] == pooled[j]) for i in chosen for j in rest))
    assert v[0] * (len(values_a) * len(values_b)) ** 2 == pytest.approx(np.var(us))


def test_threshold_refuses_an_alpha_outside_zero_and_one():
    assert sq.threshold(0.01) == pytest.approx(math.log(100))
    with pytest.raises(ValueError, match="alpha"):
        sq.threshold(1.5)


def overdispersed_null(rng, runs=2000, looks=60):
    """A small candidate arm (about 5 per interval) and a large stable one, skewed counts with the same law."""
    n_c, n_s = rng.poisson(5, (runs, looks)), rng.poisson(50, (runs, looks))

    def sums(n):
        draws = rng.negative_binomial(3.5, 3.5 / 33.5, size=(*n.shape, n.max())).astype(float)
        keep = np.arange(n.max()) < n[..., None]
        return (draws * keep).sum(-1), (draws * draws * keep).sum(-1)

    return n_c, *sums(n_c), n_s, *sums(n_s)


@pytest.mark.parametrize("sign", [1, -1])
def test_the_two_sample_mean_test_holds_alpha_on_skewed_counts_under_60_looks(sign):
    n_c, s_c, q_c, n_s, s_s, q_s = overdispersed_null(np.random.default_rng(1))
    d, v = sq.mean_increments(n_c, s_c, q_c, n_s, s_s, q_s, 1.0, sign)
    scale = 0.1 * s_s.sum(-1) / n_s.sum(-1)
    assert (sq.mean_test(d, v, scale).max(axis=-1) >= sq.threshold(0.05)).mean() <= 0.05


def test_without_shrinking_the_small_arm_s_variance_the_same_test_is_liberal(monkeypatch):
    monkeypatch.setattr(sq, "SHRINK", 0.0)
    n_c, s_c, q_c, n_s, s_s, q_s = overdispersed_null(np.random.default_rng(1))
    d, v = sq.mean_increments(n_c, s_c, q_c, n_s, s_s, q_s, 1.0, -1)
    assert (sq.mean_test(d, v, 0.1 * s_s.sum(-1) / n_s.sum(-1)).max(axis=-1) >= sq.threshold(0.05)).mean() > 0.08


def test_the_rank_test_holds_alpha_on_bucketed_latencies_under_60_looks():
    from nerops.telemetry.metrics import LATENCY_BOUNDS_MS

    rng = np.random.default_rng(2)
    n_c, n_s = rng.poisson(5, (2000, 60)), rng.poisson(50, (2000, 60))
    bounds = np.array(LATENCY_BOUNDS_MS)

    def bucketed(n):
        keep = np.arange(n.max()) < n[..., None]
        index = np.searchsorted(bounds, rng.lognormal(np.log(35), 0.6, size=(*n.shape, n.max())))
        return np.stack([((index == j) & keep).sum(-1) for j in range(len(bounds) + 1)], axis=-1)

    a, b = bucketed(n_c), bucketed(n_s)
    for sign in (1, -1):
        d, v = sq.rank_increments(a, b, 0.5, sign)
        assert (sq.mean_test(d, v, 0.1).max(axis=-1) >= sq.threshold(0.05)).mean() <= 0.05
