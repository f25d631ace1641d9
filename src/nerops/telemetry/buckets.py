"""Bucket arithmetic, pure: OTel explicit buckets kept sparse, merged aggregates, quantiles from buckets.

No SQL and no I/O here: the store (:mod:`nerops.telemetry.store`) and the metrics-source port
(:mod:`nerops.telemetry.source`) build on these values.
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass


def sparse_buckets(bounds: Sequence[float], counts: Sequence[int]) -> tuple[tuple[float, int], ...]:
    """OTel explicit buckets -> ``((upper bound, count), ...)`` keeping only what a quantile needs.

    ``counts[i]`` counts values in ``(bounds[i-1], bounds[i]]`` (the last one up to +inf). Non-empty
    buckets are kept, each with its predecessor's upper bound (count 0 if empty) so the lower edge of
    every kept bucket stays known after rows are merged.
    """
    if len(counts) != len(bounds) + 1:
        raise ValueError(f"{len(counts)} bucket counts for {len(bounds)} bounds (expected {len(bounds) + 1})")
    kept: dict[float, int] = {}
    for i, count in enumerate(counts):
        if count:
            kept[float(bounds[i]) if i < len(bounds) else math.inf] = int(count)
            if i > 0:
                kept.setdefault(float(bounds[i - 1]), int(counts[i - 1]))
    return tuple(sorted(kept.items()))


def bucket_counts(values: Iterable[float], bounds: Sequence[float]) -> list[int]:
    """Raw values -> OTel explicit bucket counts (``len(bounds) + 1`` of them)."""
    counts = [0] * (len(bounds) + 1)
    for value in values:
        counts[bisect.bisect_left(bounds, value)] += 1
    return counts


def _key(bound: float) -> str:
    text = repr(float(bound))
    return text[:-2] if text.endswith(".0") else text


def encode_buckets(buckets: Sequence[tuple[float, int]] | None) -> str | None:
    if not buckets:
        return None
    return json.dumps({_key(upper): count for upper, count in buckets}, separators=(",", ":"))


def quantile(
    buckets: Sequence[tuple[float, float]], q: float, *, lo: float | None = None, hi: float | None = None
) -> float | None:
    """Approximate quantile ``q`` (0..1) from ``(upper bound, count)`` buckets, interpolating within one.

    ``lo``/``hi`` (the observed min and max) bound the first and the open-ended last bucket. ``None``
    when there is nothing to estimate from.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile must be within 0..1, not {q}")
    ordered = sorted(buckets)
    total = sum(count for _, count in ordered)
    if total <= 0:
        return None
    rank = q * total
    seen = 0.0
    previous: float | None = None
    for upper, count in ordered:
        if count > 0 and seen + count >= rank:
            lower = previous if previous is not None else (lo if lo is not None else upper)
            top = upper
            if hi is not None:
                top = min(top, hi)
            if lo is not None:
                lower = max(lower, lo)
            if math.isinf(top):
                top = lower
            lower = min(lower, top)
            return lower + (top - lower) * max(0.0, min(1.0, (rank - seen) / count))
        seen += count
        previous = upper
    return ordered[-1][0] if hi is None else hi


@dataclass(frozen=True)
class Aggregate:
    """Merged rows: ``count`` measurements (requests, documents; counters: the total), their sum, min, max.

    ``buckets`` are ``(upper bound, count)`` pairs (histograms, when asked for); ``points`` is the number
    of stored rows merged; ``sumsq`` the sum of the squared measurements, where a companion counter
    keeps it (None otherwise).
    """

    count: float = 0.0
    sum: float = 0.0
    min: float | None = None
    max: float | None = None
    buckets: tuple[tuple[float, float], ...] = ()
    points: int = 0
    sumsq: float | None = None

    @property
    def mean(self) -> float | None:
        return self.sum / self.count if self.count else None

    @property
    def variance(self) -> float | None:
        """The sample variance (n - 1 in the denominator) from count, sum and sum of squares."""
        if self.sumsq is None or self.count < 2:
            return None
        return max(0.0, (self.sumsq - self.sum * self.sum / self.count) / (self.count - 1))

    def quantile(self, q: float) -> float | None:
        return quantile(self.buckets, q, lo=self.min, hi=self.max)

    @property
    def p95(self) -> float | None:
        return self.quantile(0.95)

    def merge(self, other: Aggregate) -> Aggregate:
        merged: dict[float, float] = dict(self.buckets)
        for upper, count in other.buckets:
            merged[upper] = merged.get(upper, 0) + count
        return Aggregate(
            self.count + other.count,
            self.sum + other.sum,
            _pick(min, self.min, other.min),
            _pick(max, self.max, other.max),
            tuple(sorted(merged.items())),
            self.points + other.points,
            _pick(lambda a, b: a + b, self.sumsq, other.sumsq),
        )


EMPTY = Aggregate()


def _pick(choose, a: float | None, b: float | None) -> float | None:
    if a is None:
        return b
    if b is None:
        return a
    return choose(a, b)
