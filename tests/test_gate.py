"""The gate's decision logic, as tables of cases (pure: milliseconds)."""

from __future__ import annotations

import pytest

from nerops.data import LABELS
from nerops.evaluation import doc_counts, paired_bootstrap_diff
from nerops.gate import GateEvidence, GatePolicy, ModelScores, decide

GOOD_LABELS = dict.fromkeys(LABELS, 0.6) | {"Email Address": 0.95}


def scores(version: str, f1: float, latency: float = 40.0, **labels: float) -> ModelScores:
    per_label = GOOD_LABELS | {label.replace("_", " "): value for label, value in labels.items()}
    return ModelScores(version, f1, per_label, latency)


POLICY = GatePolicy(min_micro_f1=0.40, noninferiority_margin=0.02, max_latency_ratio=1.5)


@pytest.mark.parametrize(
    ("challenger", "champion", "diff", "ci", "passed", "failed_checks"),
    [
        # first model: thresholds alone
        (scores("1", 0.52), None, None, None, True, []),
        (scores("1", 0.35), None, None, None, False, ["min_micro_f1"]),
        (scores("1", 0.52, Soft_Skills=0.05), None, None, None, False, ["min_label_f1:Soft Skills"]),
        (scores("1", 0.52, Email_Address=0.5), None, None, None, False, ["min_label_f1:Email Address"]),
        # against a champion: non-inferiority on the paired interval's lower bound
        (scores("2", 0.53), scores("1", 0.52), 0.01, (-0.01, 0.03), True, []),
        (scores("2", 0.52), scores("1", 0.52), 0.0, (0.0, 0.0), True, []),
        (scores("2", 0.50), scores("1", 0.52), -0.02, (-0.05, 0.01), False, ["non_inferiority"]),
        (scores("2", 0.51), scores("1", 0.52), -0.01, (-0.02, 0.0), False, ["non_inferiority"]),  # bound not above
        (scores("2", 0.38), scores("1", 0.52), -0.14, (-0.17, -0.1), False, ["min_micro_f1", "non_inferiority"]),
        # latency budget: ratio of medians measured interleaved
        (scores("2", 0.53, latency=59.0), scores("1", 0.52, latency=40.0), 0.01, (-0.01, 0.03), True, []),
        (scores("2", 0.53, latency=61.0), scores("1", 0.52, latency=40.0), 0.01, (-0.01, 0.03), False, ["latency"]),
        # a champion without a paired comparison is never a pass
        (scores("2", 0.53), scores("1", 0.52), None, None, False, ["non_inferiority"]),
    ],
)
def test_decide(challenger, champion, diff, ci, passed, failed_checks):
    result = decide(GateEvidence(challenger, champion, 50, diff, ci, personal_strings=0), POLICY)
    assert result.passed is passed
    assert [check.name for check in result.checks if not check.passed] == failed_checks
    assert len(result.reasons) >= 1


def test_a_failed_gate_reads_as_sentences_with_values_and_thresholds():
    result = decide(GateEvidence(scores("2", 0.388), scores("1", 0.517), 50, -0.13, (-0.163, -0.101), 0), POLICY)
    summary = result.summary()
    assert summary.startswith("v2 FAILED the gate against champion v1")
    assert "micro F1 0.388 < minimum 0.40" in summary
    assert "95 % CI -0.163 to -0.101 over 50 CVs" in summary and "allowed -0.020" in summary
    assert result.verdict == "fail"


def test_per_label_minima_are_configurable():
    policy = GatePolicy(min_label_f1={"Name": 0.7}, default_min_label_f1=0.0)
    assert not decide(GateEvidence(scores("1", 0.5), None, 50, personal_strings=0), policy).passed  # Name 0.6 < 0.7
    assert decide(GateEvidence(scores("1", 0.5, Name=0.75), None, 50, personal_strings=0), policy).passed


GOLD = [[(0, 4, "Name"), (10, 14, "Degree")]] * 20
PERFECT = GOLD
HALF = [[(0, 4, "Name")]] * 20


@pytest.mark.parametrize(
    ("a", "b", "expect_point", "low_above", "high_below"),
    [
        (PERFECT, PERFECT, 0.0, -1e-9, 1e-9),
        (PERFECT, HALF, 1 - 2 / 3, 0.3, 0.34),
        (HALF, PERFECT, 2 / 3 - 1, -0.34, -0.3),
    ],
)
def test_paired_bootstrap_difference(a, b, expect_point, low_above, high_below):
    per_a = [doc_counts(g, p) for g, p in zip(GOLD, a, strict=True)]
    per_b = [doc_counts(g, p) for g, p in zip(GOLD, b, strict=True)]
    point, low, high = paired_bootstrap_diff(per_a, per_b, samples=200, seed=1)
    assert point == pytest.approx(expect_point, abs=1e-4)
    assert low_above <= low <= point <= high <= high_below


def test_paired_bootstrap_needs_the_same_documents():
    with pytest.raises(ValueError, match="same documents"):
        paired_bootstrap_diff([{}], [], samples=10)


@pytest.mark.parametrize(
    ("found", "passed", "message"),
    [
        (0, True, "no personal string of the training set in the model files"),
        (3, False, "3 personal strings of the training set in the model files: refused"),
        (None, False, "the model files were not audited for personal data"),  # fails closed
    ],
)
def test_the_privacy_audit_decides_too(found, passed, message):
    result = decide(GateEvidence(scores("2", 0.53), scores("1", 0.52), 50, 0.01, (-0.01, 0.03), found), POLICY)
    check = next(check for check in result.checks if check.name == "privacy_audit")
    assert (result.passed, check.passed, check.message) == (passed, passed, message)
    if not passed:
        assert message in result.summary()
