"""Alert evaluation cost against the size of the telemetry history: ``python -m bench.alert_queries [sizes]``.

Fills stores (in a temporary folder) with 10^5, 10^6 and 10^7 points: two live deployments at any time
(a new one every two days, as rollouts would), one export every 10 s, ~30 rows per deployment per
export (latency with its sum of squares and edge counters, requests, errors; entities, documents,
empty predictions, input length, 12 labels, each histogram with its sum of squares). A closed
writer's watermark at the end marks the history complete; the rules against a reference deployment
compare the older live deployment with the newer one.
The newest hours are the same at every size; only the length of the history grows (8 hours, 3 days,
33 days). Then times ``evaluate(every rule in alerts/rules.yaml, now)`` in interleaved rounds (one
evaluation per store per round, so a busy machine slows every size alike) and prints the medians and
their ratios: ~1 means the cost follows the window queried, not the history. Target: < 100 ms at
10^7 points. Writes bench/results/alert_queries.json with the machine's description.
"""

from __future__ import annotations

import json
import os
import platform
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nerops.data import LABELS
from nerops.telemetry.alerts import evaluate, load_rules
from nerops.telemetry.metrics import (
    CLIENT_ERROR_COUNT,
    DOCUMENT_COUNT,
    EMPTY_PREDICTION_COUNT,
    ENTITIES_DETECTED_COUNT,
    ENTITIES_PER_LABEL,
    INFERENCE_LATENCY_MS,
    INPUT_LENGTH_CHARS,
    LATENCY_EDGES_MS,
    METRICS,
    MODEL,
    REQUEST_COUNT,
    SERVER_ERROR_COUNT,
    SYSTEM,
    TABLES,
    latency_over,
)
from nerops.telemetry.points import Point
from nerops.telemetry.source import Watermark
from nerops.telemetry.store import TelemetryStore

RESULTS = Path(__file__).parent / "results" / "alert_queries.json"
SIZES = (10**5, 10**6, 10**7)
TARGET_MS = 100.0
NOW = 1_767_225_600.0  # 2026-01-01 00:00 UTC: a fixed clock, so every run measures the same data
INTERVAL_S = 10.0
ROTATION_S = 2 * 86400.0
VARIANTS = 16
BATCH_ROWS = 250_000
RUNS = 15
REFERENCE = "dep-0100"  # the older of the two live deployments at NOW: the reference rules' stable


def _templates(deployment: str, version: str, seed: int) -> list[tuple[list[tuple], list[tuple]]]:
    """Row variants for one deployment's export (everything but the time): (system rows, model rows) each."""
    rng = random.Random(seed)
    variants = []
    for variant in range(VARIANTS):
        requests = rng.randint(8, 14)
        identity = {"endpoint": "resume-ner", "deployment": deployment, "model_version": version, "interval_s": 10.0}
        latencies = [rng.lognormvariate(3.8, 0.4) for _ in range(requests)]
        system = [
            *Point.measured(0.0, INFERENCE_LATENCY_MS, latencies, **identity),
            Point.counter(0.0, REQUEST_COUNT, requests, **identity),
        ]
        for edge in LATENCY_EDGES_MS:
            slow = sum(latency > edge for latency in latencies)
            if slow:
                system.append(Point.counter(0.0, latency_over(edge), slow, **identity))
        if variant % 4 == 0:
            system.append(Point.counter(0.0, CLIENT_ERROR_COUNT, 1, **identity))
        if variant % 8 == 1:
            system.append(Point.counter(0.0, SERVER_ERROR_COUNT, 1, **identity))
        entities = [rng.randint(0, 40) if rng.random() > 0.03 else 0 for _ in range(requests)]
        model = [
            *Point.measured(0.0, ENTITIES_DETECTED_COUNT, entities, **identity),
            Point.counter(0.0, DOCUMENT_COUNT, requests, **identity),
            *Point.measured(0.0, INPUT_LENGTH_CHARS, [rng.randint(800, 9000) for _ in range(requests)], **identity),
        ]
        if 0 in entities:
            model.append(Point.counter(0.0, EMPTY_PREDICTION_COUNT, entities.count(0), **identity))
        for label in LABELS:
            if rng.random() < 0.97:
                count = rng.randint(1, 3 * requests)
                model.append(Point.counter(0.0, ENTITIES_PER_LABEL, count, label=label, **identity))
                squares = count * count // requests + count  # about the sum of per-document squares
                model.append(Point.counter(0.0, ENTITIES_PER_LABEL + "_sumsq", squares, label=label, **identity))
        variants.append(([p.row()[2:] for p in system], [p.row()[2:] for p in model]))
    return variants


class _Generator:
    """Exports in time order, two live deployments at a time, rotating every ROTATION_S seconds."""

    def __init__(self) -> None:
        self._cache: dict[int, list] = {}

    def deployments(self, t: float) -> list:
        generation = int((t - NOW + ROTATION_S / 2) // ROTATION_S)  # the newest deployment went live a day ago
        if generation not in self._cache:
            self._cache = {
                generation: [
                    _templates(f"dep-{k + 100:04d}", str(k + 100), seed=k) for k in (generation, generation + 1)
                ]  # fmt: skip
            }
        return self._cache[generation]

    def rows_per_export(self) -> float:
        variants = [v for templates in self.deployments(NOW) for v in templates]
        return sum(len(s) + len(m) for s, m in variants) / len(variants) * 2

    def fill(self, store: TelemetryStore, points: int, console: Console) -> int:
        exports = int(points / self.rows_per_export())
        t = NOW - exports * INTERVAL_S
        written, started, shown = 0, time.perf_counter(), 0.0
        system, model = [], []
        for index in range(exports):
            t += INTERVAL_S
            for templates in self.deployments(t):
                rows_s, rows_m = templates[int(t // INTERVAL_S) * 7 % VARIANTS]
                system.extend((t, INTERVAL_S, *row) for row in rows_s)
                model.extend((t, INTERVAL_S, *row) for row in rows_m)
            if len(system) + len(model) >= BATCH_ROWS or index == exports - 1:
                written += store.write_rows({TABLES[SYSTEM]: system, TABLES[MODEL]: model}, _CATALOG)
                system, model = [], []
                done = (index + 1) / exports
                if done - shown >= 0.1 or done == 1.0:
                    shown = done
                    rate = written / (time.perf_counter() - started)
                    console.print(f"  {written:>12,} points  {done:6.1%}  {rate:,.0f} points/s", highlight=False)
        return written


_CATALOG = [(spec.kind, name) for name, spec in METRICS.items()]


def fill(size: int, workdir: Path, console: Console) -> tuple[TelemetryStore, dict[str, object]]:
    path = workdir / f"telemetry-{size}.db"
    console.print(f"[bold]{size:,}[/] points: filling {path.name}")
    store = TelemetryStore(path, retention_days=None)
    started = time.perf_counter()
    written = _Generator().fill(store, size, console)
    store.write([], watermark=Watermark("bench", "resume-ner", NOW, NOW - 40 * 86400, closed=True))
    fill_s = time.perf_counter() - started
    span = store.time_range()
    size_mb = sum(f.stat().st_size for f in workdir.glob(f"{path.name}*")) / 1e6
    return store, {
        "points": written,
        "history_days": round((span[1] - span[0]) / 86400.0, 2) if span else 0.0,
        "fill_seconds": round(fill_s, 1),
        "fill_points_per_s": round(written / fill_s),
        "store_mb": round(size_mb, 1),
    }


def time_evaluations(stores: dict[int, TelemetryStore], rules, console: Console) -> dict[int, dict[str, object]]:
    """RUNS rounds, each evaluating once per store in turn: a busy machine slows every size alike."""
    timings: dict[int, list[float]] = {size: [] for size in stores}
    results: dict[int, list] = {}
    console.print(f"timing: {RUNS} rounds over the {len(stores)} stores")
    for _ in range(RUNS):
        for size, store in stores.items():
            started = time.perf_counter()
            results[size] = evaluate(rules, store, now=NOW, reference=REFERENCE)
            timings[size].append((time.perf_counter() - started) * 1000.0)
    return {
        size: {
            "evaluate_ms_median": round(statistics.median(times), 2),
            "evaluate_ms_first": round(times[0], 2),
            "evaluate_ms_min": round(min(times), 2),
            "evaluate_ms_max": round(max(times), 2),
            "results": len(results[size]),
            "states": {
                state: sum(r.state == state for r in results[size]) for state in ("firing", "ok", "no_data", "error")
            },
        }
        for size, times in timings.items()
    }


def main(sizes: tuple[int, ...] = SIZES) -> dict[str, object]:
    console = Console() if sys.stdout.isatty() else Console(width=120)
    rules = load_rules()
    console.print(f"{len(rules)} rules from alerts/rules.yaml; {RUNS} evaluations per size, interleaved")
    rows: dict[int, dict[str, object]] = {}
    stores: dict[int, TelemetryStore] = {}
    with tempfile.TemporaryDirectory(prefix="nerops-alert-bench-") as tmp:
        try:
            for size in sizes:
                stores[size], rows[size] = fill(size, Path(tmp), console)
            for size, timing in time_evaluations(stores, rules, console).items():
                rows[size].update(timing)
        finally:
            for store in stores.values():
                store.close()
    base, base_min = rows[sizes[0]]["evaluate_ms_median"], rows[sizes[0]]["evaluate_ms_min"]
    for row in rows.values():
        row["ratio_to_smallest"] = round(row["evaluate_ms_median"] / base, 2)
        row["ratio_to_smallest_min"] = round(row["evaluate_ms_min"] / base_min, 2)
    table = Table(title="Evaluating every alert rule for the last hour, against the history's size")
    for column in ("points", "history", "fill", "store", "evaluate (median)", "min", "first run", "ratio", "results"):
        table.add_column(column, justify="right")
    for row in rows.values():
        table.add_row(
            f"{row['points']:,}",
            f"{row['history_days']} d",
            f"{row['fill_seconds']} s",
            f"{row['store_mb']:,.0f} MB",
            f"{row['evaluate_ms_median']} ms",
            f"{row['evaluate_ms_min']} ms",
            f"{row['evaluate_ms_first']} ms",
            f"{row['ratio_to_smallest']}",
            ", ".join(f"{n} {s}" for s, n in row["states"].items() if n),
        )
    console.print(table)
    largest = rows[sizes[-1]]
    meets = largest["evaluate_ms_median"] < TARGET_MS
    console.print(
        f"at {largest['points']:,} points: {largest['evaluate_ms_median']} ms "
        f"({'meets' if meets else 'MISSES'} the {TARGET_MS:.0f} ms target)"
    )
    report = {
        "benchmark": "alert_queries",
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "rules": [rule.name for rule in rules],
        "runs_per_size": RUNS,
        "export_interval_s": INTERVAL_S,
        "live_deployments": 2,
        "sizes": {str(size): row for size, row in rows.items()},
        "ratios": {f"{size}/{sizes[0]}": rows[size]["ratio_to_smallest"] for size in sizes[1:]},
        "ratios_of_min": {f"{size}/{sizes[0]}": rows[size]["ratio_to_smallest_min"] for size in sizes[1:]},
        "target_ms_at_largest": TARGET_MS,
        "meets_target": meets,
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "machine": platform.machine(),
            "python": sys.version.split()[0],
            "sqlite": sqlite3.sqlite_version,
        },
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    console.print(f"written to {RESULTS}")
    return report


if __name__ == "__main__":
    main(tuple(int(float(arg)) for arg in sys.argv[1:]) or SIZES)
