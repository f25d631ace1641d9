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

    refused = runner.invoke(main, ["promote", version, "--reason", "no gate"])
    assert refused.exit_code == 2 and "never been gated" in refused.stderr
    refused = runner.invoke(main, ["promote", str(tiny_model), "--reason", "a path"])
    assert refused.exit_code == 2 and "registry versions only" in refused.stderr

    assert runner.invoke(main, ["ledger", "verify"]).exit_code == 0
    history = runner.invoke(main, ["ledger", "history"])
    assert "tester@test  registration resume-ner v1" in history.stdout

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
    for command in ("train", "evaluate", "predict", "demo", "data"):
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
    assert result.exit_code == 0 and out.read_text().count("<svg") == 5
    assert "error-rate" in out.read_text()
