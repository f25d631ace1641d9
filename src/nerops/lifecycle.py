"""The steps of the model lifecycle as plain functions over plain values (the Prefect tasks wrap them).

Each takes and returns JSON-friendly values (paths as strings, versions as strings), never
clients, so that a task's inputs and results show in the Prefect UI and nothing holds CV text.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from pathlib import Path

from nerops.actors import acted_by
from nerops.dataset import load_dataset, resolve_zips
from nerops.errors import ConfigurationError
from nerops.gate import GatePolicy
from nerops.governance import Governance, RegistryAnchor
from nerops.ledger import FileAnchor, Ledger
from nerops.model.config import config_name_for, get_config
from nerops.model.personal import PersonalStrings
from nerops.model.pipeline import Progress, library_versions, train_model
from nerops.model_scores import EVALUATION_FILE, evaluate_model
from nerops.registry import get_registry
from nerops.registry.lineage import git_commit
from nerops.settings import Settings, get_settings


def run_progress(every_percent: int = 10) -> Progress:
    """A progress callback for work inside flows: a line in the Prefect run logger every ``every_percent``.

    Outside a flow or task run it logs to the ``nerops`` logger instead.
    """
    from prefect.exceptions import MissingContextError
    from prefect.logging import get_run_logger

    try:
        logger = get_run_logger()
    except MissingContextError:
        logger = logging.getLogger("nerops")
    reported: dict[str, int] = {}

    def progress(phase: str, done: int, total: int) -> None:
        percent = 100 * done // total if total else 100
        step = percent // every_percent
        if reported.get(phase, -1) < step:
            reported[phase] = step
            logger.info("%s: %d/%d (%d %%)", phase, done, total, percent)

    return progress


def open_governance(settings: Settings | None = None, *, actor: str | None = None) -> Governance:
    """Registry and ledger from settings: the ledger anchored in a local file and (lagging allowed) the registry.

    Nothing here needs the registry to be up: appends work while it is unreachable.
    """
    settings = settings or get_settings()
    registry = get_registry(settings)
    ledger = Ledger(
        settings.ledger_path,
        FileAnchor(settings.ledger_anchor_path),
        remote=RegistryAnchor(registry),
        default_actor=actor or settings.who,
        context=acted_by,
    )
    return Governance(registry, ledger, actor=actor or settings.who)


def train_candidate(
    config_name: str,
    overrides: dict[str, object] | None = None,
    *,
    actor: str | None = None,
    progress: Progress | None = None,
    source: dict[str, str] | None = None,
) -> dict[str, object]:
    """Train a model on the training split; record the training in the ledger; return where it is.

    ``config_name`` None: the profile's config. ``source`` (``git_commit``, ``requested_commit``): the code trained,
    when a commit was asked for (see :mod:`nerops.source`), recorded with the training."""
    settings = get_settings()
    config = get_config(config_name_for(config_name, settings.rollout_profile), **(overrides or {}))
    dataset = load_dataset(settings)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out = settings.models_dir / f"{config.name}-{stamp}-{config.config_hash()[:8]}"
    progress = progress or run_progress()
    meta = train_model(
        dataset.train, config, out, dev_docs=dataset.dev, dataset_version=dataset.version, progress=progress
    )
    evidence = {
        "config": config.model_dump(),
        "config_hash": config.config_hash(),
        "dataset_version": dataset.version,
        "dataset": {k: v for k, v in dataset.summary().items() if k not in ("train_zip", "test_zip")},
        "train_documents": meta["train_documents"],
        "train_seconds": meta["train_seconds"],
        "alignment": meta["alignment"],
        "dev_micro_f1": meta.get("dev_micro", {}).get("f1"),
        "model_dir": str(out),
        **(source or {}),
    }
    open_governance(settings, actor=actor).record_training(evidence)
    return {"model_dir": str(out), "config_hash": config.config_hash(), "dataset_version": dataset.version, **meta}


def train_commit(
    commit: str, config_name: str | None, overrides: dict[str, object] | None = None, *, actor: str | None = None
) -> dict[str, object]:
    """Train the code at ``commit`` (checked out beside the project, run in a child process): see nerops.source."""
    from nerops.source import train_at

    settings = get_settings()
    name = config_name_for(config_name, settings.rollout_profile)
    return train_at(commit, name, overrides or {}, state=settings.state, actor=actor)


def evaluate_candidate(model_dir: str) -> dict[str, object]:
    """Score a model folder on the fixed test set; keep the report beside the model."""
    progress = run_progress()
    result = evaluate_model(
        Path(model_dir), resolve_zips(get_settings())[1], progress=lambda done, total: progress("scoring", done, total)
    )
    (Path(model_dir) / EVALUATION_FILE).write_text(json.dumps(result, indent=2))
    return result


def register_candidate(
    model_dir: str, training: dict[str, object], evaluation: dict[str, object], *, actor: str | None = None
) -> str:
    """Register a trained model folder as a new candidate version; returns the version number."""
    gov = open_governance(actor=actor)
    config = training["config"]
    micro = evaluation["micro"]
    metrics = {
        "test_micro_f1": micro["f1"],
        "test_micro_precision": micro["precision"],
        "test_micro_recall": micro["recall"],
        "train_seconds": float(training["train_seconds"]),
        **{f"test_f1.{label}": row["f1"] for label, row in evaluation["per_label"].items()},
    }
    if training.get("dev_micro"):
        metrics["dev_micro_f1"] = training["dev_micro"]["f1"]
    info = gov.register(
        Path(model_dir),
        dataset_version=str(training["dataset_version"]),
        config_hash=str(training["config_hash"]),
        git_commit=str(training.get("git_commit") or git_commit()),
        libraries=library_versions(),
        params={**config, "train_documents": training["train_documents"]},
        extra={"requested_commit": str(training["requested_commit"])} if training.get("requested_commit") else None,
        metrics={key.replace(" ", "_"): value for key, value in metrics.items()},
    )
    return info.version


def fault_model(
    source: str,
    kind: str,
    *,
    reason: str = "fault model for a rollout demonstration",
    actor: str | None = None,
    **params: int | float | None,
) -> dict[str, object]:
    """Register a new version built from ``source``'s model folder with the fault ``kind`` in its spaCy pipeline.

    ``params`` override the kind's defaults (``after``, ``delay_ms``, ``share``, ``keep_every``: see
    :mod:`nerops.model.faults`). The fault acts only in the endpoint's worker processes, so the gate
    passes it like its source; its lineage names the fault, its parameters and ``fault_from``. The same
    request again builds the same bytes, so registration returns the version already made.
    """
    import tempfile

    from nerops.model.faults import describe_fault, fault_params
    from nerops.model.pipeline import build_fault_model

    spec = fault_params(kind, **params)
    settings = get_settings()
    gov = open_governance(settings, actor=actor)
    version = gov.resolve(source)
    recorded = gov.registration(version)
    if recorded is None:
        raise ConfigurationError(f"{gov.model} v{version} has no registration entry in the ledger: nothing to build on")
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    out = settings.models_dir / f"fault-{spec.kind}-from-v{version}-{stamp}"
    with tempfile.TemporaryDirectory(prefix="nerops-fault-") as tmp:
        folder = gov.check_lineage(version, Path(tmp))  # built only from verified artifacts
        build_fault_model(
            folder, out, spec, from_version=version, from_sha256=recorded["artifact_sha256"], reason=reason
        )
    info = gov.register(
        out,
        dataset_version=recorded.get("dataset_version", "unknown"),
        config_hash=recorded.get("config_hash", "unknown"),
        git_commit=git_commit(),
        libraries=library_versions(),
        params={"fault": spec.kind, "fault_from": version, **{f"fault.{k}": v for k, v in spec.params.items()}},
        metrics={},  # the gate measures it; offline it predicts exactly as its source
    )
    lineage = info.lineage
    return {
        "version": info.version,
        "fault": spec.kind,
        "params": spec.params,
        "fault_from": version,
        "model_dir": str(out),
        "description": describe_fault(lineage),
    }


def gate_version(version: str, policy: GatePolicy | None = None, *, actor: str | None = None) -> dict[str, object]:
    """Gate a version against the champion of this moment on the fixed test set."""
    from nerops.data import read_corpus, sha256_file
    from nerops.gating import run_gate

    train_zip, test_zip = resolve_zips(get_settings())
    gov = open_governance(actor=actor)
    result, details = run_gate(
        gov,
        version,
        read_corpus(test_zip),
        policy or GatePolicy(),
        test_sha256=sha256_file(test_zip),
        personal=PersonalStrings.from_documents(read_corpus(train_zip)),
    )
    return {"passed": result.passed, "summary": result.summary(), "reasons": result.reasons, **details}


def approve_version(version: str, reason: str, *, actor: str | None = None) -> dict[str, object]:
    """Approve a version with a current gate pass: stage=prod and alias challenger (the champion does not move)."""
    gov = open_governance(actor=actor)
    entry = gov.approve(version, reason=reason)
    state = gov.state()
    version = entry.subject["version"]
    return {
        "version": version,
        "stage": state.stage(version),
        "ledger_seq": entry.seq,
        "champion": state.champion,
        "challenger": state.challenger,
    }


def set_champion(version: str, *, expected: str | None, reason: str, actor: str | None = None) -> dict[str, object]:
    """Move the champion (audited); refused if it is no longer ``expected`` or the version is not stage=prod."""
    entry = open_governance(actor=actor).set_champion(version, expected=expected, reason=reason)
    return {"version": entry.subject["version"], "previous": expected, "ledger_seq": entry.seq}


def newest_ungated(*, actor: str | None = None) -> str | None:
    """The newest candidate version without a gate entry (what ``gate-model`` gates by default), or None."""
    state = open_governance(actor=actor).state()
    waiting = [v for v, stage in state.stages.items() if stage == "candidate" and v not in state.gates]
    return max(waiting, key=int) if waiting else None


def reconcile_registry(*, actor: str | None = None) -> list[str]:
    return open_governance(actor=actor).reconcile()


def champion_version() -> str | None:
    """The champion according to the ledger."""
    return open_governance().state().champion


def audit_artifacts(ref: str, data_path: Path | None = None) -> dict[str, object]:
    """Scan a model folder, or a registered version (downloaded and lineage-checked), for the
    training set's personal strings; counts only."""
    from nerops.data import read_corpus
    from nerops.model.personal import audit_folder

    train_zip = Path(data_path) if data_path else resolve_zips(get_settings())[0]
    personal = PersonalStrings.from_documents(read_corpus(train_zip))
    if Path(ref).is_dir():
        report = audit_folder(Path(ref), personal)
        if report.files == 0:
            raise ConfigurationError(f"{ref}: an empty folder, not a model")
        return {"model": ref, **report.as_dict(), "summary": report.describe()}
    if "/" in ref or "\\" in ref or ref.startswith((".", "~")) or Path(ref).exists():
        raise ConfigurationError(f"{ref}: no such model folder (give a folder, a version number or an alias)")
    import tempfile

    gov = open_governance()
    version = gov.resolve(ref)
    with tempfile.TemporaryDirectory(prefix="nerops-audit-") as tmp:
        report = audit_folder(gov.check_lineage(version, Path(tmp)), personal)
    result = {"model": f"{gov.model} v{version}", **report.as_dict(), "summary": report.describe()}
    result.pop("folder")
    return result
