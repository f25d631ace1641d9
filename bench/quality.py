"""Model quality on the fixed test set: `quick` and `full` trained and scored in one run.

Writes bench/results/quality.json and prints a table with training time, micro F1 (95 %
bootstrap interval over documents), per-label F1, the targets (quick >= 0.40, full >= 0.60)
and the privacy audit of each model's files (personal strings of the training zip found: 0).
"""

from __future__ import annotations

import json
import os
import platform
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from nerops.data import LABELS
from nerops.dataset import load_dataset
from nerops.evaluation import score
from nerops.model.config import get_config
from nerops.model.personal import PersonalStrings, audit_folder
from nerops.model.pipeline import Extractor, train_model
from nerops.settings import get_settings

TARGETS = {"quick": 0.40, "full": 0.60}
RESULTS = Path(__file__).parent / "results" / "quality.json"


def run_config(name: str, dataset, workdir: Path, personal: PersonalStrings) -> dict[str, object]:
    config = get_config(name)
    started = time.perf_counter()
    # the dev CVs are scored, and their names kept out of the model files like the training CVs'
    meta = train_model(dataset.train, config, workdir / name, dev_docs=dataset.dev, dataset_version=dataset.version)
    train_seconds = time.perf_counter() - started
    audit = audit_folder(workdir / name, personal)
    extractor = Extractor.load(workdir / name)
    started = time.perf_counter()
    predictions = extractor.predict_spans(doc.text for doc in dataset.test)
    predict_seconds = time.perf_counter() - started
    result = score([[(s.start, s.end, s.label) for s in d.spans] for d in dataset.test], predictions)
    return {
        "config": name,
        "config_hash": meta["config_hash"],
        "train_seconds": round(train_seconds, 1),
        "predict_ms_per_cv": round(1000 * predict_seconds / len(dataset.test), 1),
        "micro": result["micro"],
        "per_label_f1": {label: result["per_label"][label]["f1"] for label in LABELS},
        "target_f1": TARGETS[name],
        "meets_target": result["micro"]["f1"] >= TARGETS[name],
        "privacy_audit": {"ok": audit.ok, "found": audit.found, "searched": audit.searched},
    }


def main() -> None:
    console = Console()
    dataset = load_dataset(get_settings())
    personal = PersonalStrings.from_documents([*dataset.train, *dataset.dev])
    with tempfile.TemporaryDirectory() as tmp:
        rows = []
        for name in ("quick", "full"):
            console.print(f"training [bold]{name}[/] ...")
            rows.append(run_config(name, dataset, Path(tmp), personal))
    report = {
        "benchmark": "quality",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "dataset_version": dataset.version,
        "test_documents": len(dataset.test),
        "results": rows,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title=f"Quality on the fixed test set ({len(dataset.test)} CVs), {os.cpu_count()} cores")
    for column in ("config", "train s", "ms/CV", "P", "R", "micro F1 (95 % CI)", "target", "", "personal strings"):
        table.add_column(column)
    for row in rows:
        micro = row["micro"]
        low, high = micro["f1_ci95"]
        table.add_row(
            row["config"],
            f"{row['train_seconds']:.0f}",
            f"{row['predict_ms_per_cv']:.0f}",
            f"{micro['precision']:.3f}",
            f"{micro['recall']:.3f}",
            f"{micro['f1']:.3f} ({low:.3f}-{high:.3f})",
            f">= {row['target_f1']:.2f}",
            "ok" if row["meets_target"] else "MISSED",
            str(sum(row["privacy_audit"]["found"].values())),
        )
    console.print(table)
    full, quick = rows[1], rows[0]
    console.print(
        f"full / quick: F1 x{full['micro']['f1'] / max(quick['micro']['f1'], 1e-9):.2f}, "
        f"training time x{full['train_seconds'] / max(quick['train_seconds'], 1e-9):.1f}"
    )
    console.print(f"written: {RESULTS}")
