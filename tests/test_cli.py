"""The ``nerops`` command line: JSON answers on stdout, one-line errors naming the file."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from nerops.cli import main
from tests.conftest import SHARED_DATA, needs_real_data


@pytest.fixture()
def runner() -> CliRunner:
    return CliRunner()


def test_evaluate_prints_micro_and_per_label_json(runner: CliRunner, tiny_model: Path, synthetic_data):
    result = runner.invoke(main, ["evaluate", "--model", str(tiny_model), "--data", str(synthetic_data[1])])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert set(report["micro"]) >= {"precision", "recall", "f1", "f1_ci95"}
    assert len(report["per_label"]) == 12
    assert report["documents"] == 10
    assert report["micro"]["f1"] > 0.5, "the tiny model learned the synthetic CVs' structure"


def test_evaluate_on_a_missing_file_names_it(runner: CliRunner, tiny_model: Path, tmp_path: Path):
    result = runner.invoke(main, ["evaluate", "--model", str(tiny_model), "--data", str(tmp_path / "gone.zip")])
    assert result.exit_code == 2
    assert "gone.zip" in result.stderr and "no such file" in result.stderr
    assert "Traceback" not in result.output


def test_evaluate_with_an_unknown_registry_version_says_so(runner: CliRunner, synthetic_data):
    result = runner.invoke(main, ["evaluate", "--model", "3", "--data", str(synthetic_data[1])])
    assert result.exit_code == 2 and "resume-ner has no version 3" in result.stderr


def test_governance_commands_on_a_registered_version(runner: CliRunner, tiny_model: Path, synthetic_data):
    from nerops.lifecycle import open_governance

    gov = open_governance(actor="tester@test")
    version = gov.register(
        tiny_model,
        dataset_version="synthetic",
        config_hash="cfg",
        git_commit="abc123",
        libraries={"spacy": "3.8"},
        params={},
        metrics={"test_micro_f1": 0.91},
    ).version

    listed = runner.invoke(main, ["models"])
    assert listed.exit_code == 0 and "v1" in listed.stderr and "candidate" in listed.stderr and "0.910" in listed.stderr
    lineage = runner.invoke(main, ["lineage", version])
    assert lineage.exit_code == 0, lineage.output
    assert "trained on dataset version synthetic with config hash cfg" in lineage.stdout
    assert "check: registry tags and artifact bytes match" in lineage.stdout
    assert "registration resume-ner v1" in lineage.stdout
    evaluated = runner.invoke(main, ["evaluate", "--model", version, "--data", str(synthetic_data[1])])
    assert evaluated.exit_code == 0 and json.loads(evaluated.stdout)["documents"] == 10

    refused = runner.invoke(main, ["approve", version, "--reason", "no gate"])
    assert refused.exit_code == 2 and "never been gated" in refused.stderr
    refused = runner.invoke(main, ["approve", str(tiny_model), "--reason", "a path"])
    assert refused.exit_code == 2 and "registry versions only" in refused.stderr
    refused = runner.invoke(main, ["champion", "set", version, "--reason", "by hand"])
    assert refused.exit_code == 2 and "only a stage=prod version can become champion" in refused.stderr
    assert "promote" not in runner.invoke(main, ["--help"]).stdout

    assert runner.invoke(main, ["ledger", "verify"]).exit_code == 0
    history = runner.invoke(main, ["ledger", "history"])
    assert "tester@test  registration resume-ner v1" in history.stdout
    entry = gov.ledger.entries()[-1]
    assert entry.evidence["acted_by"]["os_user"] and "flow_run" not in entry.evidence["acted_by"]

    status = runner.invoke(main, ["status", "--json"])
    assert status.exit_code == 0, status.output
    assert json.loads(status.stdout)["champion"] is None and json.loads(status.stdout)["disagreements"] == []

    path = gov.ledger.path
    path.write_text(path.read_text().replace('"config_hash":"cfg"', '"config_hash":"CFG"'))
    tampered = runner.invoke(main, ["ledger", "verify"])
    assert tampered.exit_code == 1 and "entry 1" in tampered.stdout and "edited" in tampered.stdout


def test_predict_reads_stdin(runner: CliRunner, tiny_model: Path):
    result = runner.invoke(main, ["predict", "--model", str(tiny_model)], input="Reach me at ann.lee@example.com")
    assert result.exit_code == 0
    entities = json.loads(result.stdout)["entities"]
    assert {"label": "Email Address", "start": 12, "end": 31, "text": "ann.lee@example.com"} in entities


def test_the_installed_entry_point_runs():
    exe = Path(sys.executable).parent / "nerops"
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, check=True).stdout
    for command in ("train", "evaluate", "predict", "demo", "data", "approve", "champion", "status", "reinstate"):
        assert command in out


@needs_real_data
def test_data_command_reports_the_dataset(runner: CliRunner, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEROPS_DATA_DIR", str(SHARED_DATA))
    result = runner.invoke(main, ["data"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["test_docs"] == 50 and summary["train_zip"]["documents"] == 310


@needs_real_data
def test_data_command_with_a_tampered_local_copy_names_the_file(runner: CliRunner, tmp_path: Path, monkeypatch):
    for name in ("dotin_545_cvs_train_v2.zip", "dotin_set_aside_test_v2_50cvs.zip"):
        shutil.copy(SHARED_DATA / name, tmp_path / name)
    with (tmp_path / "dotin_set_aside_test_v2_50cvs.zip").open("r+b") as handle:
        handle.seek(1000)
        byte = handle.read(1)
        handle.seek(1000)
        handle.write(bytes([byte[0] ^ 1]))
    monkeypatch.setenv("NEROPS_DATA_DIR", str(tmp_path))
    result = runner.invoke(main, ["data"])
    assert result.exit_code == 2
    assert "dotin_set_aside_test_v2_50cvs.zip" in result.stderr and "sha256" in result.stderr


def test_alerts_and_dashboard_commands_on_synthetic_telemetry(runner: CliRunner, tmp_path: Path):
    import time

    from nerops.settings import get_settings
    from nerops.telemetry import Point, TelemetryStore
    from nerops.telemetry.source import Watermark

    now = time.time()
    with TelemetryStore(get_settings().state / "telemetry" / "telemetry.db") as store:
        store.write(
            (
                Point.counter(now - 60 * k, metric, value, endpoint="resume-ner", deployment="blue", model_version="1")
                for k in range(1, 15)
                for metric, value in (("request_count", 30), ("server_error_count", 6))
            ),
            watermark=Watermark("test-writer", "resume-ner", now, now - 3600, closed=True),  # a writer that stopped
        )
    result = runner.invoke(main, ["alerts"])
    assert result.exit_code == 0, result.output
    assert "error-rate" in result.stdout and "firing" in result.stdout  # 20 % server errors for 14 minutes
    out = tmp_path / "dash.html"
    result = runner.invoke(main, ["dashboard", "--out", str(out), "--hours", "0.5"])
    # the traffic weights, three system metrics, two model signals
    assert result.exit_code == 0 and out.read_text().count("<svg") == 6
    assert "error-rate" in out.read_text()


def test_ledger_repair_discards_a_torn_last_line_after_confirmation(runner: CliRunner):
    from nerops.ledger import Ledger
    from nerops.settings import get_settings

    ledger = Ledger(get_settings().ledger_path)
    ledger.append("training", subject={"model": "resume-ner"}, evidence={"summary": "one"})
    intact = ledger.path.read_bytes()
    ledger.path.write_bytes(intact + b'{"v":1,"seq":2,"ti')  # a crash mid-write
    assert runner.invoke(main, ["ledger", "repair", "--discard-partial"], input="n\n").exit_code == 1
    assert ledger.path.read_bytes().startswith(intact) and len(ledger.path.read_bytes()) > len(intact)
    result = runner.invoke(main, ["ledger", "repair", "--discard-partial"], input="y\n")
    assert result.exit_code == 0 and "discarded 18 bytes" in result.stdout
    assert ledger.path.read_bytes() == intact
    again = runner.invoke(main, ["ledger", "repair", "--discard-partial", "--yes"])
    assert "nothing to repair" in again.stdout


def test_approve_then_champion_set_then_status(runner: CliRunner, tiny_model: Path, synthetic_data, synthetic_personal):
    from nerops.data import read_corpus
    from nerops.gate import GatePolicy
    from nerops.gating import run_gate
    from nerops.lifecycle import open_governance

    gov = open_governance(actor="tester@test")
    version = gov.register(tiny_model, dataset_version="synthetic", config_hash="cfg", git_commit="abc",
                           libraries={}, params={}, metrics={}).version  # fmt: skip
    policy = GatePolicy(min_micro_f1=0.5, max_latency_ratio=3.0, bootstrap_samples=200)
    assert run_gate(gov, version, read_corpus(synthetic_data[1]), policy, test_sha256="0" * 64,
                    personal=synthetic_personal)[0].passed  # fmt: skip
    approved = runner.invoke(main, ["approve", version, "--reason", "passed"])
    assert approved.exit_code == 0, approved.output
    assert "approved v1 (ledger entry 3): stage=prod, challenger; the champion stays none" in approved.stdout
    moved = runner.invoke(main, ["champion", "set", version, "--reason", "first model, by hand"])
    assert moved.exit_code == 0 and "champion moved from none to 1 (ledger entry 4)" in moved.stdout
    status = runner.invoke(main, ["status"])
    assert "champion   v1" in status.stdout and "challenger none" in status.stdout
    assert "the ledger's champion is v1 but endpoint resume-ner has never run here" in status.stdout
    retire = runner.invoke(main, ["retire", version, "--reason", "no"])
    assert retire.exit_code == 2 and "v1 is the champion: move the champion first" in retire.stderr
