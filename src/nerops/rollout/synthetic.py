"""Series built from plain numbers, the way the metrics source returns them: for the judge's tests, the
simulation bench, and anyone checking a verdict by hand.

    row = arm_interval(0, 60, Arm("green", "2"), latencies=[31.0, 45.5], labels=[{"Skills": 4}, {}], errors=1)
    look_series = series([row, ...], start=0, end=600, step=60)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from nerops.telemetry import metrics as m
from nerops.telemetry.buckets import Aggregate, bucket_counts, sparse_buckets
from nerops.telemetry.source import Arm, ArmInterval, Coverage, Loss, Series, Watermark


def counter(total: float) -> Aggregate:
    return Aggregate(count=1.0 if total else 0.0, sum=float(total), points=1 if total else 0)


def histogram(values: Sequence[float], bounds: Sequence[float]) -> Aggregate:
    if not len(values):
        return Aggregate()
    array = np.asarray(values, dtype=float)
    return Aggregate(
        count=float(array.size),
        sum=float(array.sum()),
        min=float(array.min()),
        max=float(array.max()),
        buckets=tuple((u, float(c)) for u, c in sparse_buckets(bounds, bucket_counts(array, bounds))),
        points=1,
        sumsq=float((array * array).sum()),
    )


def arm_interval(
    start: float,
    end: float,
    arm: Arm,
    *,
    latencies: Sequence[float] = (),
    labels: Sequence[Mapping[str, int]] = (),
    errors: int = 0,
    differing: int | None = None,
    compared: int = 0,
) -> ArmInterval:
    """One arm over one interval from per-document values: a latency per answered request, the entities of
    each answered document by label; ``errors`` failed requests; ``compared`` / ``differing`` shadow pairs."""
    if len(labels) not in (0, len(latencies)):
        raise ValueError(f"{len(labels)} documents' labels for {len(latencies)} latencies")
    docs = labels if labels else [{} for _ in latencies]
    per_doc = [sum(doc.values()) for doc in docs]
    values: dict[tuple[str, str], Aggregate] = {
        (m.REQUEST_COUNT, ""): counter(len(latencies) + errors),
        (m.SERVER_ERROR_COUNT, ""): counter(errors),
        (m.DOCUMENT_COUNT, ""): counter(len(docs)),
        (m.EMPTY_PREDICTION_COUNT, ""): counter(sum(1 for n in per_doc if n == 0)),
        (m.INFERENCE_LATENCY_MS, ""): histogram(latencies, m.LATENCY_BOUNDS_MS),
        (m.ENTITIES_DETECTED_COUNT, ""): histogram(per_doc, m.ENTITY_BOUNDS),
    }
    for label in sorted({label for doc in docs for label in doc}):
        column = [doc.get(label, 0) for doc in docs]
        values[(m.ENTITIES_PER_LABEL, label)] = Aggregate(
            count=float(len(column)), sum=float(sum(column)), sumsq=float(sum(c * c for c in column)), points=1
        )
    if compared:
        values[(m.AGREEMENT_DOCUMENTS, "")] = counter(compared)
        values[(m.AGREEMENT_EXACT_DOCUMENTS, "")] = counter(compared - (differing or 0))
    return ArmInterval(start, end, arm, {key: value for key, value in values.items() if value.count or value.sum})


def series(
    rows: Sequence[ArmInterval],
    *,
    start: float,
    end: float,
    step: float,
    traffic_class: str = m.LIVE,
    watermark: float | None = None,
    loss: Sequence[Loss] = (),
    query: str = "synthetic",
) -> Series:
    """A :class:`Series` over ``(start, end]`` in ``step`` intervals; every writer's watermark at ``end``
    unless ``watermark`` says otherwise; ``loss`` attached to the intervals it touches."""
    mark = end if watermark is None else watermark
    n = int(round((end - start) / step))
    coverage = tuple(
        Coverage(
            start + i * step,
            start + (i + 1) * step,
            mark,
            tuple(x for x in loss if x.touches(start + i * step, start + (i + 1) * step)),
        )
        for i in range(n)
    )
    return Series(
        "synthetic",
        start,
        end,
        step,
        (traffic_class,),
        tuple(rows),
        coverage,
        (Watermark("synthetic", "synthetic", mark),),
        query,
    )


def empty_arm(start: float, end: float, arm: Arm) -> ArmInterval:
    return ArmInterval(start, end, arm, {})


def with_values(row: ArmInterval, values: Mapping[tuple[str, str], Aggregate]) -> ArmInterval:
    merged = dict(row.values)
    merged.update(values)
    return ArmInterval(row.start, row.end, row.arm, merged)


def labels_of(counts: Mapping[str, int]) -> dict[str, int]:
    """A document's entities by label, keeping the labels it has (zero counts dropped)."""
    return {label: int(n) for label, n in counts.items() if n}


__all__ = ["Arm", "arm_interval", "counter", "empty_arm", "histogram", "labels_of", "series", "with_values"]
