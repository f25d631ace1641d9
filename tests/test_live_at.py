""" "What was live at T" from a real ledger: approvals, traffic changes and a rollback, asked at five moments."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from nerops.errors import ConfigurationError
from nerops.ledger import Ledger
from nerops.live_at import live_at

START = datetime(2026, 11, 26, 7, 0, 0, tzinfo=UTC)
MODEL = {"model": "resume-ner"}


def at(minutes: float) -> str:
    return (START + timedelta(minutes=minutes)).strftime("%Y-%m-%dT%H:%M:%SZ")


def build(path: Path) -> Ledger:
    """One entry a minute from START: v1 approved and deployed first, v2 canaried, then rolled back."""
    minutes = itertools.count()
    ledger = Ledger(path, clock=lambda: START + timedelta(minutes=next(minutes)))

    def add(kind, actor="alice@laptop", subject=None, **evidence):
        return ledger.append(kind, subject=subject or {**MODEL}, evidence=evidence, actor=actor)

    def traffic(traffic, mirror=None):
        after = {"traffic": traffic, "mirror": mirror or {}}
        return add("traffic_change", "endpoint:resume-ner", {"endpoint": "resume-ner"}, after=after)

    def deploy(name, version):
        subject = {**MODEL, "version": version, "endpoint": "resume-ner", "deployment": name}
        return add("deployment_created", "endpoint:resume-ner", subject)

    v1, v2 = {**MODEL, "version": "1"}, {**MODEL, "version": "2"}
    add("registration", subject=v1)  # 0
    add("gate", subject=v1, verdict="pass", champion_version=None, summary="v1 PASSED the gate against the thresholds")
    add("approval", "alice@laptop", v1, reason="first model", gate_seq=2)  # 2
    deploy("blue", "1")  # 3
    traffic({"blue": 100})  # 4
    add("initial_deployment", "alice@laptop", v1, cause="initial_deployment", reason="initial deployment")  # 5
    add("registration", subject=v2)  # 6
    add("gate", subject=v2, verdict="pass", champion_version="1", summary="v2 PASSED the gate against champion v1")
    add("approval", "bob@ci", v2, reason="retrain", gate_seq=8)  # 8
    deploy("green", "2")  # 9
    traffic({"blue": 100}, {"green": 20})  # 10: shadow
    traffic({"blue": 90, "green": 10})  # 11: canary 10 %
    traffic({"blue": 75, "green": 25})  # 12: 25 %
    traffic({"blue": 100})  # 13: rolled back
    add("rollback", "prefect:progressive-rollout/run-7", v2, to_version="1", reason="error-rate firing")  # 14
    return ledger


@pytest.fixture(scope="module")
def entries(tmp_path_factory):
    return build(tmp_path_factory.mktemp("live-at") / "ledger.jsonl").entries()


def by_name(answer) -> dict:
    return {d.deployment: d for d in answer.deployments}


def test_before_anything_was_deployed(entries):
    answer = live_at(entries, at(2.5), model="resume-ner")
    assert answer.champion is None and answer.deployments == ()


def test_after_the_initial_deployment(entries):
    answer = live_at(entries, at(5), model="resume-ner")  # exactly at the initial_deployment entry
    blue = by_name(answer)["blue"]
    assert (answer.champion, answer.champion_by.kind, answer.champion_by.seq) == ("1", "initial_deployment", 6)
    assert (blue.version, blue.weight, blue.mirror, blue.since.seq) == ("1", 100, 0, 5)
    assert (blue.approved.by.actor, blue.approved.reason, blue.approved.gate_seq) == ("alice@laptop", "first model", 2)
    assert blue.approved.gate_summary == "v1 PASSED the gate against the thresholds"


def test_during_the_shadow_phase_between_two_entries(entries):
    answer = live_at(entries, at(10.5), model="resume-ner")
    blue, green = by_name(answer)["blue"], by_name(answer)["green"]
    assert (blue.weight, blue.since.seq, blue.since.time) == (100, 5, "2026-11-26T07:04:00.000000Z")
    assert (green.version, green.weight, green.mirror, green.since.seq) == ("2", 0, 20, 11)
    assert (green.approved.by.actor, green.approved.gate_seq) == ("bob@ci", 8)
    assert green.approved.gate_summary == "v2 PASSED the gate against champion v1"


def test_at_the_25_percent_canary_step(entries):
    answer = live_at(entries, at(12).replace("Z", "+00:00"), model="resume-ner")  # an offset instead of Z
    assert {d.deployment: (d.weight, d.mirror) for d in answer.deployments} == {"blue": (75, 0), "green": (25, 0)}
    assert answer.champion == "1"  # a canary does not move the champion


def test_after_the_rollback(entries):
    answer = live_at(entries, at(20), model="resume-ner")
    blue, green = by_name(answer)["blue"], by_name(answer)["green"]
    assert (blue.weight, blue.since.seq, green.weight, green.since.seq) == (100, 14, 0, 14)
    assert answer.champion == "1" and answer.champion_by.kind == "initial_deployment"
    assert green.approved.by.actor == "bob@ci", "the approval stays in the record after the rollback"


@pytest.mark.parametrize("bad", ["yesterday", "2026-11-26T07:00:00"])
def test_a_time_that_is_not_iso_8601_with_a_zone_is_refused(entries, bad):
    with pytest.raises(ConfigurationError, match="ISO 8601|no timezone"):
        live_at(entries, bad, model="resume-ner")


def test_the_cli_answers_from_the_ledger_alone(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    from nerops.cli import main
    from nerops.settings import get_settings

    monkeypatch.setenv("NEROPS_MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens: not needed
    build(get_settings().ledger_path)
    result = CliRunner().invoke(main, ["ledger", "live-at", at(11.5)])
    assert result.exit_code == 0, result.output
    assert "resume-ner/green: v2, weight 10 %, mirror 0 %, since 2026-11-26T07:11:00.000000Z" in result.stdout
    assert "approved by bob@ci at 2026-11-26T07:08:00.000000Z, on gate entry 8: retrain" in result.stdout
    data = json.loads(CliRunner().invoke(main, ["ledger", "live-at", at(11.5), "--json"]).stdout)
    assert data["champion"] == "1" and [d["weight"] for d in data["deployments"]] == [90, 10]
