"""The controller's own telemetry: at every committed step, its rollout's phase, the candidate's weight and the
time of the step, so that "a rollout is stuck" is itself an alert rule (``rollout_stuck``, alerts/rules.yaml).

    step_points(record, now, interval) -> [RolloutPoint]   pure: what one committed step records
    record_step(ctl, record, now)                          the call in run._commit: never raises
    controller_telemetry(settings) -> TelemetryWriter      the factory's writer: the state folder's store

Every step (a look, or a manual command) records, as points of kind ``controller`` (table
``controller_points``, :mod:`nerops.telemetry.rollout_points`): ``rollout_weight_percent`` (the candidate's
weight) and ``rollout_last_look_time`` (the step's time), each with the endpoint, the rollout id, the candidate
deployment and its model version, the phase after the step and the plan's look interval. The write comes right
after the step is saved and before its actions (a step whose actions fail, an ending included, is recorded all
the same; the write takes well under a millisecond and waits at most ``BUSY_TIMEOUT_S`` for a busy store). A
write that fails is a warning in the log, never a failed step: the decision is saved already (record, evidence,
outbox), and this telemetry is a signal about the controller, not evidence.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from nerops.controller.records import RolloutRecord
from nerops.telemetry.metrics import ROLLOUT_LAST_LOOK_TIME, ROLLOUT_WEIGHT_PERCENT
from nerops.telemetry.rollout_points import RolloutPoint

if TYPE_CHECKING:
    from nerops.controller.run import Controller
    from nerops.settings import Settings

log = logging.getLogger("nerops.controller")
BUSY_TIMEOUT_S = 0.5  # a store locked longer than this costs the step a warning, not a stall


class TelemetryWriter(Protocol):
    def write(self, points: Iterable[RolloutPoint]) -> int: ...


class StoreWriter:
    """The local telemetry store at ``path``, opened at the first write (a controller that only rolls back never
    waits for it before acting)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._store = None

    def write(self, points: Iterable[RolloutPoint]) -> int:
        if self._store is None:
            from nerops.telemetry.store import TelemetryStore

            self._store = TelemetryStore(self.path, busy_timeout_s=BUSY_TIMEOUT_S)
        return self._store.write(points)


def controller_telemetry(settings: Settings) -> TelemetryWriter:
    """The store in the state folder (where the endpoint's telemetry goes), or nothing when telemetry is off."""
    if not settings.telemetry_enabled:
        from nerops.telemetry.disabled import DisabledTelemetry

        return DisabledTelemetry()
    return StoreWriter(settings.state / "telemetry" / "telemetry.db")


def step_points(record: RolloutRecord, now: float, interval: float) -> list[RolloutPoint]:
    """The points of one committed step of ``record`` (its state after the step), taken at ``now``."""
    identity = {
        "endpoint": record.endpoint,
        "rollout": record.rollout_id,
        "deployment": record.candidate,
        "model_version": record.version,
        "phase": str(record.state.get("phase", "")),
        "interval_s": float(interval),
    }
    return [
        RolloutPoint(now, ROLLOUT_WEIGHT_PERCENT, float(record.state.get("weight", 0)), **identity),
        RolloutPoint(now, ROLLOUT_LAST_LOOK_TIME, float(now), **identity),
    ]


def record_step(ctl: Controller, record: RolloutRecord, now: float) -> None:
    """Write the step's points with the controller's writer (``ctl.telemetry``; None: none); never raises."""
    writer = ctl.telemetry
    if writer is None:
        return
    try:
        writer.write(step_points(record, now, ctl.plan.interval))  # type: ignore[attr-defined]
    except Exception as exc:  # the step is decided and saved: telemetry must not undo or stop it
        log.warning(
            "rollout %s: the controller's telemetry was not written (%s: %s); the rollout goes on",
            record.rollout_id,
            type(exc).__name__,
            str(exc)[:300],
        )
