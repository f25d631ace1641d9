"""Rollout history and reports over hand-written records, evidence and ledgers (no endpoint, no telemetry)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from nerops.cli import main
from nerops.controller import evidence
from nerops.controller.history import summarize
from nerops.controller.ownership import subject
from nerops.controller.records import RecordStore, RolloutRecord
from nerops.ledger import Entry, FileAnchor, Ledger

T0 = 1_700_000_000.0


def record(phase: str = "rolled_back", weights=(0, 50, 0), ended_at: float | None = T0 + 30, **extra) -> RolloutRecord:
    steps = [
        {"index": 0, "kind": "readiness", "start": T0, "end": T0 + 2},
        {"index": 1, "kind": "canary", "start": T0 + 2},
    ]
    if ended_at is not None:
        steps[-1]["end"] = ended_at
    state = {
        "phase": phase,
        "step": 1,
        "weight": weights[-1],
        "weights": list(weights),
        "started": T0,
        "steps": steps,
        "ending": extra.pop("ending", "unhealthy: latency-mean: candidate <= 1.25 x stable (e-value 250 >= 200)"),
    }
    return RolloutRecord(
        "ner", "resume-ner", "7", 1, "v7-1", "blue", "6", "test", "abc123", "tester", 0.0, state,
        created=T0, updated=T0 + 31, **extra,
    )  # fmt: skip


def line(t: float, phase: str = "progressing", step: int = 1, status: str = "healthy", answered=None, **extra) -> dict:
    out = {"time": T0 + t, "rollout": "ner/v7/1", "owner": "tester", "step": step, "phase": phase, "weight": 50}
    out["look"] = {"status": status, "reason": f"{status} at {t}", "metrics": [], "queries": {}, "window": None}
    if answered is not None:
        out["answered"] = {
            "live": {"candidate": answered[0], "stable": answered[1]},
            "mirror": {"candidate": 0, "stable": 0},
        }
    return {**out, **extra}


@pytest.mark.parametrize(
    ("rec", "looks", "outcome", "to_decision", "note", "blast", "live"),
    [
        pytest.param(  # live requests from the look at +10 s; ended at +25 s
            record(),
            [line(5, answered=(0, 0)), line(10, answered=(4, 4)),
             line(25, "rolled_back", status="unhealthy", answered=(10, 30))],
            "rolled_back", 15.0, "15s from the first look that counted live", 0.25, 10, id="rolled-back-after-live",
        ),
        pytest.param(  # rolled back in a shadow step: weights never above 0, no live request ever routed to it
            record(weights=(0,)),
            [line(5, answered=(0, 0)), line(9, "rolled_back", status="unhealthy", answered=(0, 40))],
            "rolled_back", None, "decided before any live request", 0.0, 0, id="shadow-rollback-no-live-request",
        ),
        pytest.param(  # a readiness failure: no judged look at all, weight 0 throughout
            record("aborted", weights=(0,)),
            [line(1, "aborted", step=0, status="unhealthy")],
            "aborted", None, "decided before any live request", 0.0, 0, id="readiness-abort-no-counts",
        ),
        pytest.param(
            record("progressing", weights=(0, 50), ended_at=None),
            [line(5, answered=(2, 2)), line(10, answered=(20, 20))],
            "running", None, "not decided yet", 0.5, 20, id="still-running",
        ),
        pytest.param(  # evidence written before request counts: the blast radius is unknown, not zero
            record(),
            [line(5), line(10), line(25, "rolled_back", status="unhealthy")],
            "rolled_back", None, "unknown: the evidence predates request counts", None, None, id="old-evidence",
        ),
    ],
)  # fmt: skip
def test_summarize(rec, looks, outcome, to_decision, note, blast, live):
    s = summarize(rec, looks, [])
    assert (s.outcome, s.time_to_decision, s.blast_radius, s.candidate_live) == (outcome, to_decision, blast, live)
    assert s.decision_note.startswith(note), s.decision_note
    assert s.duration == (30.0 if rec.ended else 31.0)  # to the end of its last step, or to the last save


def test_summarize_takes_the_ledger_range_of_this_rollout_only():
    def entry(seq: int, subj: dict, ev: dict | None = None) -> Entry:
        return Entry(1, seq, "t", "a", "k", subj, ev or {}, "p", "h")

    rec = record()
    entries = [
        entry(3, {"model": "resume-ner"}),
        entry(4, subject(rec)),
        entry(5, {"endpoint": "ner"}, {"correlation_id": "ner/v7/1"}),  # a traffic change the rollout made
        entry(6, subject(rec) | {"rollout": "ner/v8/1"}),
        entry(9, {"model": "resume-ner", "version": "7"}, {"rollout": "ner/v7/1"}),  # champion_change
    ]
    assert summarize(rec, [], entries).ledger_seqs == (4, 9)


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, RolloutRecord]:
    """A state folder holding one rolled-back rollout: its record, evidence file and ledger entries."""
    folder = tmp_path / "state"
    monkeypatch.setenv("NEROPS_STATE_DIR", str(folder))
    store, ledger = (
        RecordStore(folder / "rollouts"),
        Ledger(folder / "ledger" / "ledger.jsonl", FileAnchor(folder / "ledger" / "head.json")),
    )
    rec = record(labels=())
    ledger.append("training", subject={"model": "resume-ner"}, evidence={})
    started = {"steps": ["readiness", "canary 50%"], "policy": "metrics: <x & y>\n", "policy_sha256": "abc123"}
    ledger.append("rollout_started", subject=subject(rec), evidence=started)
    metric = {
        "metric": "latency-mean", "kind": "mean", "mode": "enforce", "tested": "candidate <= 1.25 x stable",
        "status": "unhealthy", "reason": "r", "e_value": 251.5, "threshold": 200.0, "alpha": 0.005, "margin": 1.25,
        "candidate_samples": 120.0, "stable_samples": 360.0, "min_samples": 50, "candidate": 412.25,
        "stable": 61.5, "strata": 4, "traffic": ["live", "probe"],
    }  # fmt: skip
    path = store.evidence_path(rec)
    evidence.append(path, line(5, answered=(0, 0)))
    evidence.append(path, line(10, answered=(5, 5)))
    deciding = line(25, "rolled_back", status="unhealthy", answered=(30, 90))
    deciding["look"].update(metrics=[metric], queries={"live": "SELECT * FROM points WHERE a < 'b'"})
    lines, sha = evidence.append(path, deciding)
    for kind in ("verdict", "rolled_back"):
        decided = {"decision": kind, "summary": f"{kind}: latency", "evidence_lines": lines, "evidence_sha256": sha}
        ledger.append("rollout_decision", subject=subject(rec), evidence=decided)
    ledger.append(
        "traffic_change", subject={"endpoint": "ner"}, evidence={"correlation_id": rec.rollout_id, "after": {}}
    )
    ledger.append(
        "rollout_finished",
        subject=subject(rec),
        evidence={"phase": "rolled_back", "evidence_lines": lines, "evidence_sha256": sha},
    )
    store.write(rec)
    return folder, rec


def test_rollout_report_shows_the_deciding_evidence_and_checks_the_ledger(state):
    folder, rec = state
    shown = CliRunner().invoke(main, ["rollout", "report", rec.rollout_id, "--out", "-"])
    assert shown.exit_code == 0, shown.output
    text = shown.output
    assert "# Rollout ner/v7/1: rolled_back" in text
    row = "| latency-mean | enforce | candidate <= 1.25 x stable | unhealthy | 251.5 / 200 | 412.25 | 61.5 | 120 / 360"
    assert row in text
    assert "seq 2..6 (5 entries)" in text and "ledger ok: 6 entries" in text
    assert "evidence file matches the ledger: the 3 entries that record its sha256 agree" in text
    assert (
        "15s from the first look that counted live candidate requests; 23s after it first took live" in text
        and "25.0 % of live" in text
    )
    assert "rollouts/ner/v7-1.evidence.jsonl" in text and str(folder) not in text  # the same wherever the folder is
    written = CliRunner().invoke(main, ["rollout", "report", rec.rollout_id, "--format", "html"])
    page = Path(written.output.strip())
    assert page == folder / "reports" / "ner-v7-1.html"
    html = page.read_text()
    assert "&lt;x &amp; y&gt;" in html and "<x & y>" not in html and "a &lt; &#x27;b&#x27;" in html
    assert "http" not in html.replace('lang="en"', "")  # self-contained: no external asset
    path = RecordStore(folder / "rollouts").evidence_path(rec)
    path.write_bytes(path.read_bytes().replace(b"412.25", b"41.225"))  # the evidence changed after the decision
    changed = CliRunner().invoke(main, ["rollout", "report", rec.rollout_id, "--out", "-"]).output
    assert "> **MISMATCH: entry 4 (rollout_decision)" in changed


def test_rollout_list_and_unknown_ids(state):
    folder, rec = state
    listed = CliRunner().invoke(main, ["rollout", "list"])
    assert listed.exit_code == 0, listed.output
    header, row = listed.output.splitlines()
    assert header.split()[:3] == ["rollout", "outcome", "started"]
    assert row.split() == ["ner/v7/1", "rolled_back", "2023-11-14", "22:13:20Z", "30s", "15s", "25.0", "%", "30"]
    data = json.loads(CliRunner().invoke(main, ["rollout", "list", "--json"]).output)
    assert data[0]["ledger_seqs"] == [2, 6] and data[0]["answered"]["live"] == {"candidate": 30, "stable": 90}
    for bad, said in [
        ("ner/v9/1", "no rollout ner/v9/1"),
        ("other/v7/1", "no rollouts of endpoint 'other'"),
        ("x", "not a rollout id"),
    ]:
        refused = CliRunner().invoke(main, ["rollout", "report", bad])
        assert refused.exit_code == 2 and said in refused.output, refused.output
    assert not (folder / "rollouts" / "other").exists()
