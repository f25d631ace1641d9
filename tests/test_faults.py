"""Fault models: real models with a fault in their spaCy pipeline that the gate passes and serving shows."""

from __future__ import annotations

import random
import re
import statistics
import time
import uuid
from pathlib import Path
from xml.etree import ElementTree

import pytest
from click.testing import CliRunner

from nerops.data import read_corpus
from nerops.errors import ConfigurationError, PromotionError
from nerops.gate import GatePolicy
from nerops.gating import run_gate
from nerops.governance import Governance, RegistryAnchor
from nerops.ledger import Ledger
from nerops.model import faults
from nerops.model.pipeline import Extractor, build_fault_model
from nerops.registry.mlflow_registry import MlflowRegistry
from nerops.serving.client import LocalEndpoint
from nerops.settings import Settings
from tests.cvs import synthetic_cv

POLICY = GatePolicy(min_micro_f1=0.5, max_latency_ratio=3.0, bootstrap_samples=200)
AFTER = 3  # documents each serving worker answers well before the fault acts
DELAY_MS = 200


def texts(n: int, seed: int = 3) -> list[str]:
    rng = random.Random(seed)
    return ["".join(ElementTree.fromstring(f"<cv>{synthetic_cv(rng)}</cv>").itertext()).strip() for _ in range(n)]


def gate(gov: Governance, version: str, docs, personal):
    return run_gate(gov, version, docs, POLICY, test_sha256="0" * 64, personal=personal)


@pytest.fixture(scope="module")
def state(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, synthetic_data, synthetic_personal):
    """v1 (the tiny model) is champion; v2, v3, v4 are its slow, fewer-entities and errors faults, gated."""
    from nerops.lifecycle import fault_model, open_governance

    folder = tmp_path_factory.mktemp("faults-state")
    mp = pytest.MonkeyPatch()
    mp.setenv("NEROPS_STATE_DIR", str(folder))
    gov = open_governance(actor="tester@test")
    docs = read_corpus(synthetic_data[1])
    source = gov.register(
        tiny_model,
        dataset_version="synthetic",
        config_hash="cfg",
        git_commit="abc",
        libraries={},
        params={},
        metrics={},
    ).version
    assert gate(gov, source, docs, synthetic_personal)[0].passed
    gov.approve(source, reason="test")
    gov.set_champion(source, expected=None, reason="test")
    made = {
        "slow": fault_model(source, "slow", after=AFTER, delay_ms=DELAY_MS, reason="test slow"),
        "fewer-entities": fault_model(source, "fewer-entities", after=AFTER, reason="test fewer"),
        "errors": fault_model(source, "errors", after=0, share=0.3, reason="test errors"),
    }
    gates = {kind: gate(gov, result["version"], docs, synthetic_personal) for kind, result in made.items()}
    yield {"folder": folder, "source": source, "made": made, "gates": gates}
    mp.undo()


@pytest.fixture(autouse=True)
def _state_env(state, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("NEROPS_STATE_DIR", str(state["folder"]))


@pytest.fixture(scope="module")
def endpoint(state):
    """The champion on blue; each fault version approved (profile test) on its own one-worker deployment."""
    from nerops.lifecycle import open_governance

    mp = pytest.MonkeyPatch()
    mp.setenv("NEROPS_STATE_DIR", str(state["folder"]))
    mp.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov = open_governance(actor="tester@test")
    ep = LocalEndpoint.start(Settings(state_dir=state["folder"]), "faults-ep", export_interval=0.5)
    try:
        client = ep.client()
        client.begin_create_deployment("blue", state["source"], instance_count=1)
        for kind, result in state["made"].items():
            gov.approve(result["version"], reason="test: a fault for a rollout to roll back")
            client.begin_create_deployment(kind, result["version"], instance_count=1)
        for name in ("blue", *state["made"]):
            client.wait_deployment(name)
        client.set_traffic({"blue": 100})
        yield ep
    finally:
        ep.stop()
        mp.undo()


def served(ep: LocalEndpoint, deployment: str, state, *, metric: str, count: int, kind: str = "system"):
    """The endpoint's own telemetry of ``metric`` for ``deployment``, once ``count`` requests are exported."""
    from nerops.telemetry.store import TelemetryStore

    deadline = time.monotonic() + 15
    while True:
        with TelemetryStore(state["folder"] / "telemetry" / "telemetry.db") as store:
            requests = store.aggregate(
                "system", "request_count", 0, time.time() + 60, deployment=deployment, traffic=None
            )
            wanted = store.aggregate(kind, metric, 0, time.time() + 60, deployment=deployment, traffic=None)
        if requests.sum >= count or time.monotonic() > deadline:
            assert requests.sum == count, f"{deployment}: {requests.sum} requests exported, expected {count}"
            return wanted
        time.sleep(0.3)


def test_a_normal_model_has_no_fault_component_and_no_fault_lineage(state, tiny_model: Path):
    from nerops.lifecycle import open_governance

    assert "nerops_fault" not in (tiny_model / "pipeline" / "config.cfg").read_text()
    assert Extractor.load(tiny_model).fault is None
    assert "fault" not in open_governance().registration(state["source"])


def test_the_fault_is_in_the_saved_pipeline_and_named_by_the_lineage(state):
    from nerops.lifecycle import open_governance

    gov = open_governance()
    for kind, result in state["made"].items():
        folder = Path(result["model_dir"])
        config = (folder / "pipeline" / "config.cfg").read_text()
        assert '[components.nerops_fault]\nfactory = "nerops_fault"' in config and f'kind = "{kind}"' in config
        extractor = Extractor.load(folder)
        assert extractor.nlp.pipe_names[-1] == "nerops_fault" and extractor.fault.kind == kind
        recorded = gov.registration(result["version"])  # the ledger's record, written once
        assert recorded["fault"] == kind and recorded["fault_from"] == state["source"]
        assert recorded["fault.after"] == str(result["params"]["after"])
        assert gov.registry.get_version(result["version"]).lineage == recorded
    assert gov.registration(state["made"]["slow"]["version"])["fault.delay_ms"] == str(DELAY_MS)


def test_the_gate_passes_a_fault_version_like_its_source(state):
    for kind, (result, details) in state["gates"].items():
        assert result.passed, (kind, result.reasons)
        assert details["champion"]["version"] == state["source"]
        assert details["f1_diff"] == 0.0, "offline the fault model predicts exactly as its source"
        assert details["challenger"]["micro"] == details["champion"]["micro"]


def test_offline_the_component_passes_through_and_in_a_serving_process_it_acts(state, monkeypatch):
    folder = Path(state["made"]["fewer-entities"]["model_dir"])
    text = texts(1)[0]
    offline = Extractor.load(folder)
    first = offline.predict(text)
    assert len(first) >= 5
    assert all(offline.predict(text) == first for _ in range(2 * AFTER))
    monkeypatch.setenv(faults.SERVING_VARIABLE, "1")
    serving = Extractor.load(folder)
    answers = [serving.predict(text) for _ in range(AFTER + 2)]
    assert answers[:AFTER] == [first] * AFTER
    assert answers[AFTER] == first[::5] and len(answers[AFTER]) < len(first)


def test_lineage_says_fault_in_words(state):
    from nerops.lifecycle import open_governance
    from nerops.reporting import describe_lineage

    text = describe_lineage(open_governance(), state["made"]["slow"]["version"])
    assert f"FAULT MODEL: fault slow, built from v{state['source']}: +{DELAY_MS} ms on 100% of documents" in text
    assert f"after the first {AFTER} documents of each serving worker" in text
    assert "why it was made: test slow" in text
    assert "FAULT" not in describe_lineage(open_governance(), state["source"])


def test_slow_answers_slower_after_n(endpoint: LocalEndpoint, state):
    client = endpoint.client()
    text = texts(1)[0]
    seconds = []
    for _ in range(AFTER + 4):
        started = time.perf_counter()
        assert client.score(text, deployment="slow").status_code == 200
        seconds.append(time.perf_counter() - started)
    before, after = seconds[:AFTER], seconds[AFTER:]
    assert min(after) >= DELAY_MS / 1000
    assert statistics.median(after) > 2 * statistics.median(before)
    latency = served(endpoint, "slow", state, metric="inference_latency_ms", count=AFTER + 4)
    assert latency.count == AFTER + 4 and latency.max >= DELAY_MS > latency.min
    assert latency.sum >= 4 * DELAY_MS  # the server's own measure: every request after the first N waited


def test_fewer_entities_answers_fewer_entities_after_n(endpoint: LocalEndpoint, state):
    client = endpoint.client()
    text = texts(1)[0]
    source = client.score(text, deployment="blue").json()["entities"]
    answers = [client.score(text, deployment="fewer-entities").json()["entities"] for _ in range(AFTER + 3)]
    assert answers[:AFTER] == [source] * AFTER
    kept = [len(answer) for answer in answers[AFTER:]]  # 1 entity in 5, counted across documents
    assert all(n < len(source) for n in kept) and sum(kept) <= -(-3 * len(source) // 5)
    entities = served(
        endpoint, "fewer-entities", state, metric="entities_detected_count", count=AFTER + 3, kind="model"
    )
    assert entities.sum == AFTER * len(source) + sum(kept)  # the server's own count agrees with the answers


def test_errors_answers_500_for_the_chosen_inputs_and_200_for_the_others(endpoint: LocalEndpoint, state):
    client = endpoint.client()
    sample = texts(20, seed=11)
    chosen = [faults.chosen(text, 0.3) for text in sample]
    assert 0 < sum(chosen) < len(sample)
    for text, fails in zip(sample, chosen, strict=True):
        response = client.score(text, deployment="errors")
        assert response.status_code == (500 if fails else 200)
        if fails:
            assert response.json()["error"]["code"] == "model_error" and text[:20] not in response.text
        assert client.score(text, deployment="blue").status_code == 200
    errors = served(endpoint, "errors", state, metric="server_error_count", count=len(sample))
    assert errors.sum == sum(chosen)


def test_cli_registers_a_fault_and_refuses_unknown_parameters(state):
    from nerops.cli import main

    runner = CliRunner()
    args = ["fault-model", "--from", state["source"], "--fault", "slow", "--delay-ms", "50", "--after", "1"]
    result = runner.invoke(main, [*args, "--reason", "cli"])
    assert result.exit_code == 0, result.output
    assert "(candidate): FAULT MODEL: fault slow" in result.output and "+50 ms" in result.output
    version = re.search(r"registered v(\d+) \(candidate\)", result.output).group(1)
    lineage = runner.invoke(main, ["lineage", version])
    assert lineage.exit_code == 0 and "fault slow" in lineage.output and "why it was made: cli" in lineage.output
    listed = runner.invoke(main, ["models"])
    assert listed.exit_code == 0 and "(fault" in listed.output  # the stage column marks fault versions
    wrong = runner.invoke(main, ["fault-model", "--from", state["source"], "--fault", "errors", "--delay-ms", "5"])
    assert wrong.exit_code == 2 and "fault 'errors' takes after, share; not delay_ms" in wrong.output
    assert sorted(faults.KINDS) == sorted(main.commands["fault-model"].params[1].type.choices)


def test_fault_parameters_are_checked():
    with pytest.raises(ConfigurationError, match="unknown fault kind"):
        faults.fault_params("flaky")
    with pytest.raises(ConfigurationError, match="share must be in"):
        faults.fault_params("errors", share=1.5)
    assert faults.fault_params("errors").params == {"after": 10, "share": 0.3}


@pytest.fixture()
def gov(tracking_uri: str, tmp_path: Path) -> Governance:
    registry = MlflowRegistry(tracking_uri, f"ner-{uuid.uuid4().hex[:8]}", artifact_root=(tmp_path / "art").as_uri())
    ledger = Ledger(tmp_path / "ledger.jsonl", RegistryAnchor(registry), default_actor="tester@test")
    return Governance(registry, ledger, actor="tester@test")


def test_a_fault_version_takes_production_roles_only_under_the_demo_or_test_profile(
    gov: Governance, tiny_model: Path, tmp_path: Path, synthetic_data, synthetic_personal, monkeypatch
):
    def register(folder: Path) -> str:
        return gov.register(
            folder,
            dataset_version="synthetic",
            config_hash="cfg",
            git_commit="abc",
            libraries={},
            params={},
            metrics={},
        ).version

    source = register(tiny_model)
    built = build_fault_model(
        tiny_model, tmp_path / "fault", faults.fault_params("errors"), from_version=source, from_sha256="", reason="x"
    )
    fault = register(built)  # registered by hand: the lineage still says fault
    assert gov.registration(fault)["fault"] == "errors"
    docs = read_corpus(synthetic_data[1])
    assert gate(gov, fault, docs, synthetic_personal)[0].passed
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "production")
    with pytest.raises(
        PromotionError, match=r"cannot approve v2: it is a fault model \(fault: errors, built from v1\)"
    ):
        gov.approve(fault, reason="try")
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "test")
    gov.approve(fault, reason="a fault for a rollout demonstration")
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "production")
    for cause in ("manual", "rollout"):
        with pytest.raises(PromotionError, match="cannot make champion v2: .* NEROPS_ROLLOUT_PROFILE is 'production'"):
            gov.set_champion(fault, expected=None, reason="try", cause=cause)
    assert gov.state().champion is None
    monkeypatch.setenv("NEROPS_ROLLOUT_PROFILE", "demo")
    gov.set_champion(fault, expected=None, reason="a rollout demonstration")
    assert gov.state().champion == fault
