"""The local store's schema: tables, indexes, the catalogue of metrics; created, upgraded and checked here.

Version 2 added ``traffic_class`` to the point tables (version 1 had ``mirrored`` 0/1: upgraded in
place, mirrored rows become ``mirror``), the writers' ``watermarks`` and the ``telemetry_loss`` records
(see :mod:`nerops.telemetry.store`). Version 3 (this one) added ``controller_points``, the controller's own
metrics (:mod:`nerops.telemetry.rollout_points`); older stores are upgraded in place.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nerops.errors import NeropsError
from nerops.telemetry.metrics import CONTROLLER, TABLES

SCHEMA_VERSION = 3


class TelemetryStoreError(NeropsError):
    """The telemetry store cannot be opened, read or written."""


_POINTS = """CREATE TABLE IF NOT EXISTS {table} (
    time REAL NOT NULL, interval_s REAL NOT NULL DEFAULT 0, metric TEXT NOT NULL,
    endpoint TEXT NOT NULL, deployment TEXT NOT NULL, model_version TEXT NOT NULL,
    traffic_class TEXT NOT NULL DEFAULT 'live', label TEXT NOT NULL DEFAULT '',
    item_count REAL NOT NULL, sum REAL NOT NULL, min REAL, max REAL, buckets TEXT)"""
_CONTROLLER_POINTS = """CREATE TABLE IF NOT EXISTS {table} (
    time REAL NOT NULL, interval_s REAL NOT NULL DEFAULT 0, metric TEXT NOT NULL,
    endpoint TEXT NOT NULL, rollout TEXT NOT NULL, deployment TEXT NOT NULL, model_version TEXT NOT NULL,
    phase TEXT NOT NULL, value REAL NOT NULL)"""
_EVIDENCE = (
    "CREATE TABLE IF NOT EXISTS metrics_catalog (kind TEXT NOT NULL, metric TEXT NOT NULL, "
    "PRIMARY KEY (kind, metric)) WITHOUT ROWID",
    # one row per writer (an exporting process): everything it recorded up to exported_to is stored
    "CREATE TABLE IF NOT EXISTS watermarks (writer TEXT PRIMARY KEY, endpoint TEXT NOT NULL, started REAL NOT NULL, "
    "exported_to REAL NOT NULL, closed INTEGER NOT NULL DEFAULT 0, pid INTEGER, host TEXT NOT NULL DEFAULT '', "
    "interval_s REAL NOT NULL DEFAULT 0)",
    # what a writer could not store: kind, signal ('system', 'model', or '' for both), how many, over (start, end]
    "CREATE TABLE IF NOT EXISTS telemetry_loss (writer TEXT NOT NULL, endpoint TEXT NOT NULL, kind TEXT NOT NULL, "
    "signal TEXT NOT NULL DEFAULT '', count REAL NOT NULL, start REAL NOT NULL, end REAL NOT NULL)",
    "CREATE INDEX IF NOT EXISTS telemetry_loss_end ON telemetry_loss (end)",
)


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables, or upgrade a version-1 or -2 store, in one transaction; nothing to do when current."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        for kind, table in TABLES.items():
            if kind == CONTROLLER:  # new in version 3: created in every older store
                conn.execute(_CONTROLLER_POINTS.format(table=table))
            elif version == 1:
                conn.execute(f"ALTER TABLE {table} ADD COLUMN traffic_class TEXT NOT NULL DEFAULT 'live'")
                conn.execute(f"UPDATE {table} SET traffic_class = 'mirror' WHERE mirrored = 1")
            else:
                conn.execute(_POINTS.format(table=table))
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_metric_time ON {table} (metric, time)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_deployment ON {table} (deployment, metric, time)")
        for statement in _EVIDENCE:
            conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def check_schema(conn: sqlite3.Connection, path: Path) -> None:
    """A clear error for a file that is not a store, or one written by a newer nerops."""
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise TelemetryStoreError(
            f"{path} has store schema {version}, newer than this nerops ({SCHEMA_VERSION}): upgrade nerops"
        )
    if version < SCHEMA_VERSION:
        raise TelemetryStoreError(f"{path} is not a telemetry store (or an empty one, or an old one opened read-only)")
