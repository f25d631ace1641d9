"""SQL text for the local store, pure: table layout, inserts, grouped and stepped reads, evidence rendering.

Nothing here touches a connection: :class:`~nerops.telemetry.store.TelemetryStore` runs what these build.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from nerops.telemetry.metrics import CONTROLLER, LIVE, TABLES

GROUP_COLUMNS = ("deployment", "model_version", "endpoint", "label", "traffic_class")

_COLUMNS = (
    "time",
    "interval_s",
    "metric",
    "endpoint",
    "deployment",
    "model_version",
    "traffic_class",
    "label",
    "item_count",
    "sum",
    "min",
    "max",
    "buckets",
)
# the controller's table (nerops.telemetry.rollout_points): its own attributes, one gauge value
CONTROLLER_COLUMNS = (
    "time", "interval_s", "metric", "endpoint", "rollout", "deployment", "model_version", "phase", "value",
)  # fmt: skip
_COLUMNS_OF = {table: CONTROLLER_COLUMNS if kind == CONTROLLER else _COLUMNS for kind, table in TABLES.items()}
INSERT = {
    table: f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    for table, columns in _COLUMNS_OF.items()
}


@dataclass
class Query:
    """A query as run: SQL text and parameters; ``str()`` shows it with the parameters in place."""

    sql: str
    params: list[object] = field(default_factory=list)

    def __str__(self) -> str:
        return render_sql(self.sql, self.params)


def render_sql(sql: str, params: Sequence[object]) -> str:
    """The SQL text with every ``?`` replaced by its parameter as a literal (evidence, not for running)."""
    parts = sql.split("?")
    if len(parts) - 1 != len(params):
        return f"{sql}  -- params {list(params)!r}"
    out = [parts[0]]
    for value, rest in zip(params, parts[1:], strict=True):
        if isinstance(value, str):
            out.append("'" + value.replace("'", "''") + "'")
        elif value is None:
            out.append("NULL")
        else:
            out.append(repr(value))
        out.append(rest)
    return " ".join("".join(out).split())


# step k covers (start + k*step, start + (k+1)*step]: k = ceil((time - start) / step) - 1 (params: start, step x 3)
_OFFSET = "((p.time - ?) / ?)"
STEP_EXPR = f"(CAST({_OFFSET} AS INTEGER) - ({_OFFSET} = CAST({_OFFSET} AS INTEGER)))"


def group_sql(
    table: str,
    metric: str,
    start: float,
    end: float,
    *,
    by: Sequence[str] = ("deployment",),
    deployments: Sequence[str] | None = None,
    label: str | None = None,
    traffic: Sequence[str] | None = (LIVE,),
    endpoint: str | None = None,
    buckets: bool = False,
) -> Query:
    """One row per group over ``(start, end]``: count, sum, min, max, rows (``buckets``: per bucket bound)."""
    for column in by:
        if column not in GROUP_COLUMNS:
            raise ValueError(f"cannot group by {column!r}: choose from {', '.join(GROUP_COLUMNS)}")
    prefix = "p." if buckets else ""
    where = [f"{prefix}metric = ?", f"{prefix}time > ?", f"{prefix}time <= ?"]
    params: list[object] = [metric, float(start), float(end)]
    if deployments is not None:
        where.append(f"{prefix}deployment IN ({', '.join('?' * len(deployments))})")
        params.extend(deployments)
    if label is not None:
        where.append(f"{prefix}label = ?")
        params.append(label)
    if traffic is not None:
        where.append(f"{prefix}traffic_class IN ({', '.join('?' * len(traffic))})")
        params.extend(traffic)
    if endpoint is not None:
        where.append(f"{prefix}endpoint = ?")
        params.append(endpoint)
    keys = ", ".join(f"{prefix}{column}" for column in by)
    select_keys = f"{keys}, " if by else ""
    group = f" GROUP BY {keys}" if by else ""
    if buckets:
        where.append("p.buckets IS NOT NULL")
        sql = (
            f"SELECT {select_keys}j.key, SUM(j.value) FROM {table} AS p, json_each(p.buckets) AS j "
            f"WHERE {' AND '.join(where)} GROUP BY {select_keys}j.key"
        )
    else:
        sql = (
            f"SELECT {select_keys}SUM(item_count), SUM(sum), MIN(min), MAX(max), COUNT(*) FROM {table} "
            f"WHERE {' AND '.join(where)}{group}"
        )
    return Query(sql, params)


def step_sql(
    table: str,
    metric: str,
    start: float,
    end: float,
    step_s: float,
    *,
    by: str | None = "deployment",
    deployment: str | None = None,
    label: str | None = None,
    traffic: Sequence[str] | None = (LIVE,),
    buckets: bool = False,
) -> Query:
    """Rows per step ``k`` (covering ``(start + k*step, start + (k+1)*step]``) and group ``g``."""
    if step_s <= 0:
        raise ValueError(f"step_s must be positive, not {step_s}")
    if by is not None and by not in GROUP_COLUMNS:
        raise ValueError(f"cannot group by {by!r}: choose from {', '.join(GROUP_COLUMNS)}")
    step_expr = STEP_EXPR
    where = ["p.metric = ?", "p.time > ?", "p.time <= ?"]
    params: list[object] = [float(start), float(step_s)] * 3 + [metric, float(start), float(end)]
    if deployment is not None:
        where.append("p.deployment = ?")
        params.append(deployment)
    if label is not None:
        where.append("p.label = ?")
        params.append(label)
    if traffic is not None:
        where.append(f"p.traffic_class IN ({', '.join('?' * len(traffic))})")
        params.extend(traffic)
    group_col = f"p.{by}" if by else "''"
    if buckets:
        sql = (
            f"SELECT {step_expr} AS k, {group_col} AS g, j.key, SUM(j.value) FROM {table} AS p, "
            f"json_each(p.buckets) AS j WHERE {' AND '.join(where)} AND p.buckets IS NOT NULL GROUP BY k, g, j.key"
        )
    else:
        sql = (
            f"SELECT {step_expr} AS k, {group_col} AS g, SUM(item_count), SUM(sum), MIN(min), MAX(max), COUNT(*) "
            f"FROM {table} AS p WHERE {' AND '.join(where)} GROUP BY k, g ORDER BY k, g"
        )
    return Query(sql, params)


def arm_series_sql(
    table: str,
    metrics: Sequence[str],
    start: float,
    end: float,
    step_s: float,
    *,
    endpoint: str | None,
    deployments: Sequence[str] | None,
    traffic: Sequence[str],
    buckets: bool = False,
) -> Query:
    """The metrics-source read: per step, deployment, model version, metric and label (``buckets``: per bound)."""
    if step_s <= 0:
        raise ValueError(f"step must be positive, not {step_s}")
    where = [
        f"p.metric IN ({', '.join('?' * len(metrics))})",
        "p.time > ?",
        "p.time <= ?",
        f"p.traffic_class IN ({', '.join('?' * len(traffic))})",
    ]
    params: list[object] = [float(start), float(step_s)] * 3 + [*metrics, float(start), float(end), *traffic]
    if endpoint is not None:
        where.append("p.endpoint = ?")
        params.append(endpoint)
    if deployments is not None:
        where.append(f"p.deployment IN ({', '.join('?' * len(deployments))})")
        params.extend(deployments)
    keys = "k, p.deployment, p.model_version, p.metric, p.label"
    if buckets:
        where.append("p.buckets IS NOT NULL")
        sql = (
            f"SELECT {STEP_EXPR} AS k, p.deployment, p.model_version, p.metric, p.label, j.key, SUM(j.value) "
            f"FROM {table} AS p, json_each(p.buckets) AS j WHERE {' AND '.join(where)} GROUP BY {keys}, j.key"
        )
    else:
        sql = (
            f"SELECT {STEP_EXPR} AS k, p.deployment, p.model_version, p.metric, p.label, SUM(p.item_count), "
            f"SUM(p.sum), MIN(p.min), MAX(p.max), COUNT(*) FROM {table} AS p WHERE {' AND '.join(where)} "
            f"GROUP BY {keys}"
        )
    return Query(sql, params)
