"""A :class:`~nerops.rollout.verdicts.Look` from the metrics source and the endpoint, and the readiness smoke.

The judged window runs from the rollout's start to the last interval every telemetry writer has
exported (``judgeable_now``): an interval still being written is never judged as if it were empty.
A source that fails is an ``error`` verdict (traffic frozen), never ``no_data`` or ``healthy``.
"""

from __future__ import annotations

import math

import httpx

from nerops.controller.records import RolloutRecord
from nerops.governance import SYNTHETIC_EXAMPLE
from nerops.rollout.plan import Plan
from nerops.rollout.verdicts import Look
from nerops.serving.client import PIN_HEADER
from nerops.telemetry import metrics as m
from nerops.telemetry.source import Arm, MetricsSource, judgeable_now

CLASS_HEADER = "x-nerops-traffic-class"
READ = (
    m.REQUEST_COUNT,
    m.SERVER_ERROR_COUNT,
    m.INFERENCE_LATENCY_MS,
    m.DOCUMENT_COUNT,
    m.EMPTY_PREDICTION_COUNT,
    m.ENTITIES_DETECTED_COUNT,
    m.ENTITIES_PER_LABEL,
    m.AGREEMENT_DOCUMENTS,
    m.AGREEMENT_EXACT_DOCUMENTS,
    m.AGREEMENT_MATCHED,
    m.AGREEMENT_CANDIDATE_ONLY,
    m.AGREEMENT_REFERENCE_ONLY,
)
CLASSES = (m.LIVE, m.MIRROR, "probe")


def arms(record: RolloutRecord) -> tuple[Arm, Arm]:
    return Arm(record.candidate, record.version), Arm(record.stable, record.stable_version)


def look_at(source: MetricsSource, endpoint_state: dict, record: RolloutRecord, plan: Plan, now: float) -> Look:
    """Everything the judge reads at ``now``; a failing source becomes the Look's ``source_error``."""
    machine = record.machine
    candidate, stable = arms(record)
    status = endpoint_state.get("status", {}).get(record.candidate, {})
    restarts = sum(int(w.get("restarts", 0)) for w in status.get("workers", []))
    down = status.get("down") or endpoint_state.get("down", {}).get(record.candidate)
    base = {"candidate_restarts": restarts, "candidate_down": down, "labels": record.labels or None}
    try:
        until = judgeable_now(source, record.endpoint, now)
        intervals = math.floor((until - machine.started) / plan.interval + 1e-9)
        if intervals < 1:
            why = f"no complete interval yet: telemetry judged up to {until:.0f}, rollout began {machine.started:.0f}"
            return Look(now, candidate, stable, machine.steps, machine.wait_until, {}, source_error=why, **base)
        end = machine.started + intervals * plan.interval
        series = {
            cls: source.series(record.endpoint, [candidate, stable], READ, machine.started, end, plan.interval, cls)
            for cls in CLASSES
        }
    except Exception as exc:  # fail closed: the source's outage is an error verdict, not a verdict on the model
        why = f"the metrics source failed: {type(exc).__name__}: {exc}"
        return Look(now, candidate, stable, machine.steps, machine.wait_until, {}, source_error=why, **base)
    return Look(now, candidate, stable, machine.steps, machine.wait_until, series, **base)


def smoke(url: str, key: str, deployment: str, requests: int, *, timeout: float = 30.0) -> list[int | None]:
    """Readiness: ``requests`` synthetic CVs pinned to ``deployment``, traffic class ``smoke``; one status each."""
    statuses: list[int | None] = []
    headers = {"Authorization": f"Bearer {key}", PIN_HEADER: deployment, CLASS_HEADER: "smoke"}
    with httpx.Client(base_url=url, headers=headers, timeout=timeout) as http:
        for _ in range(requests):
            try:
                answer = http.post("/score", json={"text": SYNTHETIC_EXAMPLE})
                ok = answer.status_code == 200 and answer.headers.get(PIN_HEADER, deployment) == deployment
                statuses.append(answer.status_code if ok or answer.status_code != 200 else 409)
            except httpx.TransportError:
                statuses.append(None)
    return statuses
