"""The local store's schema: tables, indexes, the catalogue of metrics; created, upgraded and checked here."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from nerops.errors import NeropsError
from nerops.telemetry.metrics import TABLES

SCHEMA_VERSION = 1


class TelemetryStoreError(NeropsError):
    """The telemetry store cannot be opened, read or written."""


def create_schema(conn: sqlite3.Connection) -> None:
    """Create the tables (in one transaction) unless the file already has this schema."""
    if conn.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
        return
    conn.execute("BEGIN IMMEDIATE")
    try:
        for table in TABLES.values():
            conn.execute(
                f"""CREATE TABLE IF NOT EXISTS {table} (
                    time REAL NOT NULL, interval_s REAL NOT NULL DEFAULT 0, metric TEXT NOT NULL,
                    endpoint TEXT NOT NULL, deployment TEXT NOT NULL, model_version TEXT NOT NULL,
                    mirrored INTEGER NOT NULL DEFAULT 0, label TEXT NOT NULL DEFAULT '',
                    item_count REAL NOT NULL, sum REAL NOT NULL, min REAL, max REAL, buckets TEXT)"""
            )
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_metric_time ON {table} (metric, time)")
            conn.execute(f"CREATE INDEX IF NOT EXISTS {table}_deployment ON {table} (deployment, metric, time)")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS metrics_catalog (kind TEXT NOT NULL, metric TEXT NOT NULL, "
            "PRIMARY KEY (kind, metric)) WITHOUT ROWID"
        )
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
        raise TelemetryStoreError(f"{path} is not a telemetry store (or an empty one)")
