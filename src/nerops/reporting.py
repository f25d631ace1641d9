"""What the CLI and the demo do around the model: progress bars, score tables, file locations."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from nerops import model_scores
from nerops.data import LABELS
from nerops.dataset import load_dataset
from nerops.errors import ConfigurationError
from nerops.model.config import get_config
from nerops.model.pipeline import train_model
from nerops.model_scores import EVALUATION_FILE
from nerops.settings import Settings, get_settings

console = Console(stderr=True, soft_wrap=True)
if not console.is_terminal:  # logs and CI: wide enough for the tables, not 80 columns
    console.width = int(os.environ.get("COLUMNS", "120"))


def resolve_model(ref: str) -> Path:
    """A model folder from a reference: a folder path, or a registry version number or alias.

    A registry version is downloaded and checked against its lineage (tags and artifact hash)
    before it is used.
    """
    path = Path(ref)
    if path.is_dir():
        return path
    if "/" in ref or "\\" in ref:
        raise ConfigurationError(f"{ref}: no such model folder")
    from nerops.lifecycle import open_governance

    gov = open_governance()
    version = gov.resolve(ref)
    return gov.check_lineage(version, get_settings().state / "cache" / "models")


def evaluate_model(model_dir: Path, data_path: Path, *, bootstrap_samples: int = 1000) -> dict[str, object]:
    """Score the model in ``model_dir`` on the CVs of a zip or folder, with a progress bar."""
    with _progress() as bar:
        task = bar.add_task("predicting", total=None)

        def advance(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        return model_scores.evaluate_model(model_dir, data_path, bootstrap_samples=bootstrap_samples, progress=advance)


def train_and_report(
    settings: Settings,
    config_name: str,
    *,
    out: Path | None = None,
    overrides: dict[str, object] | None = None,
    demo: bool = False,
) -> dict[str, object]:
    """Train a config on the training split, score it on the fixed test set, print a table."""
    config = get_config(config_name, **(overrides or {}))
    dataset = load_dataset(settings)
    console.print(
        f"dataset [bold]{dataset.version}[/]: {len(dataset.train)} train / {len(dataset.dev)} dev CVs, "
        f"{len(dataset.test)} test CVs; {len(dataset.dropped_duplicates)} training CV(s) dropped as "
        f"duplicates of test CVs; {dataset.train_report.escapes_decoded} byte escapes decoded, "
        f"{dataset.train_report.spans_trimmed} spans trimmed"
    )
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = out or settings.models_dir / f"{config.name}-{stamp}-{config.config_hash()[:8]}"
    with _progress() as bar:
        tasks: dict[str, int] = {}

        def progress(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(phase, total=total)
            bar.update(tasks[phase], completed=done)

        meta = train_model(
            dataset.train,
            config,
            out,
            dev_docs=dataset.dev,
            dataset_version=dataset.version,
            progress=progress,
        )
    result = evaluate_model(out, _test_source(settings), bootstrap_samples=1000)
    (out / EVALUATION_FILE).write_text(json.dumps(result, indent=2))
    print_scores(result, title=f"{config.name} model on the fixed test set ({result['documents']} CVs)")
    console.print(
        f"trained in {meta['train_seconds']} s on {meta['train_documents']} CVs "
        f"({meta['alignment']['dropped']} of {meta['alignment']['spans']} gold spans off token boundaries, "
        f"not learnable); config hash {meta['config_hash']}"
    )
    console.print(f"model folder:   {out}")
    console.print(f"test scores:    {out / EVALUATION_FILE}")
    if demo:
        console.print(f"state folder:   {settings.state}")
        console.print(f"try:            echo 'Jane Doe  jane@example.com' | nerops predict --model {out}")
    return result


def print_scores(result: dict[str, object], *, title: str) -> None:
    table = Table(title=title, title_justify="left")
    for column in ("label", "precision", "recall", "F1", "gold spans"):
        table.add_column(column, justify="left" if column == "label" else "right")
    per_label = result["per_label"]
    for label in LABELS:
        row = per_label[label]
        table.add_row(label, f"{row['precision']:.2f}", f"{row['recall']:.2f}", f"{row['f1']:.2f}", str(row["support"]))
    micro = result["micro"]
    low, high = micro["f1_ci95"]
    table.add_section()
    table.add_row(
        "[bold]micro[/]",
        f"{micro['precision']:.3f}",
        f"{micro['recall']:.3f}",
        f"[bold]{micro['f1']:.3f}[/] ({low:.2f}-{high:.2f})",
        str(micro["support"]),
    )
    console.print(table)
    extra = result.get("unscored_predictions") or {}
    if extra:
        console.print("found by rules, not scored (no gold labels): " + ", ".join(f"{k} {v}" for k, v in extra.items()))


def _test_source(settings: Settings) -> Path:
    from nerops.dataset import resolve_zips

    return resolve_zips(settings)[1]


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description:>11}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


def print_versions(gov) -> None:
    """A table of registered versions with stage, aliases, test F1 and the last gate verdict."""
    table = Table(title=f"registered model {gov.model}", title_justify="left")
    for column in ("version", "stage", "aliases", "test micro F1", "last gate", "registered"):
        table.add_column(column)
    for info in gov.registry.list_versions():
        gates = gov.ledger.find("gate", model=gov.model, version=info.version)
        gate = gates[-1].evidence if gates else None
        against = f"v{gate['champion_version']}" if gate and gate["champion_version"] else "thresholds"
        verdict = f"{gate['verdict']} vs {against}" if gate else "-"
        registered = datetime.fromtimestamp(info.created_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
        f1 = _metric(gov, info, "test_micro_f1")
        stage = info.stage or "-"
        if info.lineage.get("fault"):
            stage += f" (fault {info.lineage['fault']} of v{info.lineage.get('fault_from', '?')})"
        table.add_row(f"v{info.version}", stage, ", ".join(info.aliases) or "-", f1, verdict, registered)
    console.print(table)


def _metric(gov, info, name: str) -> str:
    entries = gov.ledger.find("registration", model=gov.model, version=info.version)
    metrics = entries[-1].evidence.get("metrics", {}) if entries else {}
    return f"{metrics[name]:.3f}" if name in metrics else "-"


def describe_lineage(gov, ref: str) -> str:
    """How a version was made and what was decided about it, in words."""
    from nerops.errors import LineageError
    from nerops.ledger import describe_entry
    from nerops.model.faults import describe_fault

    version = gov.resolve(ref)
    info = gov.registry.get_version(version)
    recorded = gov.registration(version)
    lines = [f"{gov.model} v{version}: stage {info.stage or '-'}, aliases {', '.join(info.aliases) or 'none'}"]
    if recorded is None:
        lines.append("  no registration entry in the ledger: an orphan (run `nerops reconcile`)")
        return "\n".join(lines)
    libraries = ", ".join(f"{k[4:]} {v}" for k, v in sorted(recorded.items()) if k.startswith("lib."))
    lines += [
        f"  trained on dataset version {recorded['dataset_version']} with config hash {recorded['config_hash']}",
        f"  MLflow run {recorded.get('run_id', '?')}, code at git commit {recorded['git_commit']}",
        f"  libraries: {libraries}",
        f"  model artifacts sha256 {recorded['artifact_sha256']}",
    ]
    fault = describe_fault(recorded)
    if fault:
        lines.append(f"  {fault}")
        if recorded.get("fault_reason"):
            lines.append(f"  why it was made: {recorded['fault_reason']}")
    try:
        gov.verify_lineage(version)
        lines.append("  check: registry tags and artifact bytes match what was recorded at registration")
    except LineageError as exc:
        lines.append(f"  CHECK FAILED: {exc}")
    lines.append("  ledger:")
    for entry in gov.ledger.find(model=gov.model, version=version):
        lines.append("    " + describe_entry(entry))
    return "\n".join(lines)


def write_monitoring_dashboard(
    settings: Settings, *, out: Path | None = None, hours: float = 1.0, endpoint: str = "resume-ner"
) -> Path:
    """The dashboard page with the rollouts' verdicts and the alert rules' current state."""
    import time

    from nerops.dashboard import write_dashboard
    from nerops.ledger import Ledger
    from nerops.telemetry import TelemetryStore
    from nerops.telemetry.alerts import evaluate, format_results, load_rules, standalone
    from nerops.telemetry.source import judgeable_now

    store_path = settings.state / "telemetry" / "telemetry.db"
    with TelemetryStore(store_path) as store:
        now = judgeable_now(store, None, time.time())
        alerts_text = format_results(evaluate(standalone(load_rules()), store, now=now))
    entries = Ledger(settings.ledger_path).entries() if settings.ledger_path.exists() else []
    looks = rollout_looks(settings.state / "rollouts", endpoint, since=time.time() - hours * 3600)
    out = out or settings.state / "dashboard" / "index.html"
    return write_dashboard(
        store_path, entries, out, endpoint=endpoint, hours=hours, alerts_text=alerts_text, looks=looks
    )


def rollout_looks(root: Path, endpoint: str, *, since: float) -> list[dict]:
    """The evidence lines of the endpoint's rollouts saved since ``since`` or still running (the judge's looks)."""
    from nerops.controller import evidence
    from nerops.controller.records import RecordStore

    store = RecordStore(root)
    if endpoint not in store.endpoints():  # RecordStore.all would make the folder
        return []
    records = [r for r in store.all(endpoint) if r.updated >= since or not r.ended]
    return [line for record in records for line in evidence.read(store.evidence_path(record))]
