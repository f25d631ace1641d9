"""Entity-level exact-match scores: micro and per label, with a bootstrap interval over documents.

A predicted entity counts as a true positive only when its label, start and end all equal a
gold span's. Scores are computed over the dataset's 12 labels; predictions of other labels
(``Phone``, found by rules, has no gold) are counted apart and never enter the micro figures.
Pure functions over plain data: no model, no I/O.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from nerops.data import LABELS

Entity = tuple[int, int, str]  # start, end, label


@dataclass(frozen=True)
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def __add__(self, other: Counts) -> Counts:
        return Counts(self.tp + other.tp, self.fp + other.fp, self.fn + other.fn)

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
            "f1": round(self.f1, 4),
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "support": self.tp + self.fn,
        }


def doc_counts(gold: Iterable[Entity], pred: Iterable[Entity], labels: Sequence[str] = LABELS) -> dict[str, Counts]:
    """Per-label counts for one document, over ``labels`` only."""
    wanted = set(labels)
    gold_set = {entity for entity in gold if entity[2] in wanted}
    pred_set = {entity for entity in pred if entity[2] in wanted}
    tp = Counter(entity[2] for entity in gold_set & pred_set)
    fp = Counter(entity[2] for entity in pred_set - gold_set)
    fn = Counter(entity[2] for entity in gold_set - pred_set)
    return {label: Counts(tp[label], fp[label], fn[label]) for label in labels}


def micro(per_doc: Sequence[dict[str, Counts]]) -> Counts:
    total = Counts()
    for counts in per_doc:
        for value in counts.values():
            total = total + value
    return total


def bootstrap_f1(
    per_doc: Sequence[dict[str, Counts]], *, samples: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile interval of micro F1 when documents are resampled with replacement."""
    if not per_doc:
        return (0.0, 0.0)
    doc_totals = [micro([counts]) for counts in per_doc]
    rng = random.Random(seed)
    n = len(doc_totals)
    values = []
    for _ in range(samples):
        tp = fp = fn = 0
        for _ in range(n):
            c = doc_totals[rng.randrange(n)]
            tp, fp, fn = tp + c.tp, fp + c.fp, fn + c.fn
        values.append(Counts(tp, fp, fn).f1)
    values.sort()
    lo = values[int((1 - level) / 2 * (samples - 1))]
    hi = values[int((1 + level) / 2 * (samples - 1))]
    return (round(lo, 4), round(hi, 4))


def score(
    gold_docs: Sequence[Iterable[Entity]],
    pred_docs: Sequence[Iterable[Entity]],
    *,
    labels: Sequence[str] = LABELS,
    bootstrap_samples: int = 1000,
    seed: int = 0,
) -> dict[str, object]:
    """The evaluation report: micro P/R/F1 with a bootstrap CI, per-label scores, extra labels."""
    if len(gold_docs) != len(pred_docs):
        raise ValueError(f"{len(gold_docs)} gold documents but {len(pred_docs)} predictions")
    pred_lists = [list(pred) for pred in pred_docs]
    per_doc = [doc_counts(gold, pred, labels) for gold, pred in zip(gold_docs, pred_lists, strict=True)]
    per_label = {label: Counts() for label in labels}
    for counts in per_doc:
        for label, value in counts.items():
            per_label[label] = per_label[label] + value
    overall = micro(per_doc)
    low, high = bootstrap_f1(per_doc, samples=bootstrap_samples, seed=seed)
    extra = Counter(entity[2] for pred in pred_lists for entity in pred if entity[2] not in set(labels))
    return {
        "documents": len(gold_docs),
        "micro": {**overall.as_dict(), "f1_ci95": [low, high]},
        "per_label": {label: per_label[label].as_dict() for label in labels},
        "unscored_predictions": dict(sorted(extra.items())),
    }


def paired_bootstrap_diff(
    per_doc_a: Sequence[dict[str, Counts]],
    per_doc_b: Sequence[dict[str, Counts]],
    *,
    samples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> tuple[float, float, float]:
    """Micro F1 of A minus B, and the percentile interval when the same documents are resampled for both."""
    if len(per_doc_a) != len(per_doc_b):
        raise ValueError(f"paired comparison needs the same documents: {len(per_doc_a)} vs {len(per_doc_b)}")
    point = micro(per_doc_a).f1 - micro(per_doc_b).f1
    if not per_doc_a:
        return (0.0, 0.0, 0.0)
    a = [micro([counts]) for counts in per_doc_a]
    b = [micro([counts]) for counts in per_doc_b]
    rng = random.Random(seed)
    n = len(a)
    diffs = []
    for _ in range(samples):
        picks = [rng.randrange(n) for _ in range(n)]
        sum_a = sum((a[i] for i in picks), Counts())
        sum_b = sum((b[i] for i in picks), Counts())
        diffs.append(sum_a.f1 - sum_b.f1)
    diffs.sort()
    low = diffs[int((1 - level) / 2 * (samples - 1))]
    high = diffs[int((1 + level) / 2 * (samples - 1))]
    return (round(point, 4), round(low, 4), round(high, 4))
