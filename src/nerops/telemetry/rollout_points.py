"""The controller's own telemetry in the store: one row per rollout, step and metric (table ``controller_points``).

Layout (the attributes the controller puts on every recording, as ``Properties`` in ``AppMetrics`` on Azure)::

    controller_points
      time           REAL   when the step was taken (the look, or the manual command), epoch seconds
      interval_s     REAL   the rollout's look interval (its plan's): how often a live owner looks
      metric         TEXT   rollout_weight_percent | rollout_last_look_time (nerops.telemetry.metrics)
      endpoint, rollout, deployment, model_version   TEXT   the rollout id, its candidate deployment and version
      phase          TEXT   the rollout's phase after the step (progressing, paused, awaiting_approval,
                            promoted, rolled_back, aborted)
      value          REAL   the gauge's reading

The rollout rules read each rollout's latest ``rollout_last_look_time`` row (:func:`last_looks_sql`): its
phase says whether the rollout has ended, its value and interval how many intervals it has gone without a look.
"""

from __future__ import annotations

from dataclasses import dataclass

from nerops.telemetry.metrics import CONTROLLER, ROLLOUT_LAST_LOOK_TIME, TABLES, kind_of
from nerops.telemetry.sql import CONTROLLER_COLUMNS, Query

TABLE = TABLES[CONTROLLER]
COLUMNS = CONTROLLER_COLUMNS
# the rollout vocabulary (DESIGN.md); nerops.rollout.machine.ENDED says the same (a test holds them equal)
ENDED_PHASES: frozenset[str] = frozenset({"promoted", "rolled_back", "aborted"})


@dataclass(frozen=True)
class RolloutPoint:
    """One gauge reading of the controller for one rollout at one committed step."""

    time: float
    metric: str
    value: float
    endpoint: str
    rollout: str
    deployment: str
    model_version: str
    phase: str
    interval_s: float = 0.0

    def __post_init__(self) -> None:
        if kind_of(self.metric) != CONTROLLER:
            raise ValueError(f"{self.metric!r} is a {kind_of(self.metric)} metric, not one of the controller's")

    def row(self) -> tuple[object, ...]:
        return (
            float(self.time), float(self.interval_s), self.metric, self.endpoint, self.rollout, self.deployment,
            self.model_version, self.phase, float(self.value),
        )  # fmt: skip


@dataclass(frozen=True)
class RolloutLook:
    """A rollout's latest last-look point: who, in which phase, when it was looked at, how often it should be."""

    endpoint: str
    rollout: str
    deployment: str
    model_version: str
    phase: str
    interval_s: float
    last_look: float  # the gauge's value: when the step was taken
    time: float  # the row's time (locally the same; on Azure the export's)

    @property
    def ended(self) -> bool:
        return self.phase in ENDED_PHASES


@dataclass(frozen=True)
class LastLooks:
    """What :meth:`~nerops.telemetry.store.TelemetryStore.last_looks` returns: the looks and the query, as evidence."""

    looks: tuple[RolloutLook, ...]
    query: str = ""


def last_looks_sql(start: float, end: float, *, endpoint: str | None = None) -> Query:
    """Each rollout's latest ``rollout_last_look_time`` row in ``(start, end]`` (the latest look wins, then the
    latest row written)."""
    where = ["metric = ?", "time > ?", "time <= ?"]
    params: list[object] = [ROLLOUT_LAST_LOOK_TIME, float(start), float(end)]
    if endpoint is not None:
        where.append("endpoint = ?")
        params.append(endpoint)
    columns = "endpoint, rollout, deployment, model_version, phase, interval_s, value, time"
    sql = (
        f"SELECT {columns} FROM (SELECT {columns}, ROW_NUMBER() OVER (PARTITION BY rollout "
        f"ORDER BY value DESC, time DESC, rowid DESC) AS latest FROM {TABLE} WHERE {' AND '.join(where)}) "
        "WHERE latest = 1 ORDER BY rollout"
    )
    return Query(sql, params)


def looks_from_rows(rows: list[tuple]) -> tuple[RolloutLook, ...]:
    return tuple(
        RolloutLook(str(e), str(r), str(d), str(v), str(p), float(i), float(value), float(t))
        for e, r, d, v, p, i, value, t in rows
    )
