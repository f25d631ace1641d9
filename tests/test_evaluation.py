"""Entity-level scores checked against figures computed by hand."""

from __future__ import annotations

import pytest

from nerops.evaluation import Counts, bootstrap_f1, doc_counts, score

GOLD = [
    [(0, 5, "Name"), (10, 20, "Location"), (30, 35, "Tech Tools")],
    [(0, 4, "Name")],
]
PRED = [
    [(0, 5, "Name"), (10, 19, "Location"), (30, 35, "Soft Skills"), (40, 50, "Phone")],
    [(0, 4, "Name"), (5, 9, "Degree")],
]


def test_micro_scores_by_hand():
    result = score(GOLD, PRED, bootstrap_samples=200)
    micro = result["micro"]
    # TP: two names. FP: Location 10-19, Soft Skills, Degree. FN: Location 10-20, Tech Tools.
    assert (micro["tp"], micro["fp"], micro["fn"]) == (2, 3, 2)
    assert micro["precision"] == pytest.approx(0.4)
    assert micro["recall"] == pytest.approx(0.5)
    assert micro["f1"] == pytest.approx(0.4444, abs=1e-4)


def test_per_label_scores_by_hand():
    per_label = score(GOLD, PRED, bootstrap_samples=10)["per_label"]
    assert per_label["Name"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "tp": 2, "fp": 0, "fn": 0, "support": 2}
    assert per_label["Location"]["f1"] == 0.0 and per_label["Location"]["support"] == 1
    assert per_label["Tech Tools"]["fn"] == 1 and per_label["Tech Tools"]["precision"] == 0.0
    assert per_label["Soft Skills"]["fp"] == 1 and per_label["Soft Skills"]["support"] == 0
    assert len(per_label) == 12


def test_phone_is_reported_apart_and_never_scored():
    result = score(GOLD, PRED, bootstrap_samples=10)
    assert result["unscored_predictions"] == {"Phone": 1}
    assert "Phone" not in result["per_label"]


def test_bootstrap_interval_spans_the_documents_and_is_reproducible():
    per_doc = [doc_counts(g, p) for g, p in zip(GOLD, PRED, strict=True)]
    low, high = bootstrap_f1(per_doc, samples=500, seed=3)
    # Resamples are mixes of doc 1 (F1 1/3) and doc 2 (F1 2/3).
    assert 0.3333 <= low <= 0.4444 <= high <= 0.6667
    assert bootstrap_f1(per_doc, samples=500, seed=3) == (low, high)


def test_duplicate_predictions_count_once_and_empty_inputs_score_zero():
    result = score([[(0, 3, "Name")]], [[(0, 3, "Name"), (0, 3, "Name")]], bootstrap_samples=10)
    assert result["micro"]["tp"] == 1 and result["micro"]["fp"] == 0
    empty = score([[]], [[]], bootstrap_samples=10)
    assert empty["micro"]["f1"] == 0.0


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 gold documents but 1 predictions"):
        score(GOLD, PRED[:1])


def test_counts_arithmetic():
    assert Counts(1, 2, 3) + Counts(1, 1, 1) == Counts(2, 3, 4)
    assert Counts().f1 == 0.0
