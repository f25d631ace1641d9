"""The audit ledger: a valid chain, every kind of tampering named by entry, and safe concurrent appends."""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import re
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from nerops.errors import LedgerError
from nerops.ledger import GENESIS, Entry, FileAnchor, Head, Ledger, describe_entry

KINDS = ["training", "registration", "gate", "promotion"]
START = datetime(2026, 11, 26, 7, 15, 3, 123456, tzinfo=UTC)


def ticking_clock(start: datetime = START):
    ticks = itertools.count()
    return lambda: start + timedelta(seconds=next(ticks))


_BUILT: dict[tuple[int, bool], tuple[bytes, bytes | None]] = {}  # built once through the API, then copied: fast


def make_ledger(tmp_path: Path, n: int = 0, *, anchored: bool = True) -> Ledger:
    anchor = FileAnchor(tmp_path / "anchor" / "head.json") if anchored else None
    ledger = Ledger(tmp_path / "audit" / "ledger.jsonl", anchor, default_actor="alice@laptop", clock=ticking_clock())
    if n and (n, anchored) in _BUILT:
        data, head = _BUILT[n, anchored]
        ledger.path.parent.mkdir(parents=True)
        ledger.path.write_bytes(data)
        if anchor and head:
            anchor.path.parent.mkdir(parents=True)
            anchor.path.write_bytes(head)
        ledger.clock = ticking_clock(START + timedelta(seconds=n))
        return ledger
    for i in range(1, n + 1):
        kind = KINDS[(i - 1) % len(KINDS)]
        ledger.append(kind, subject={"model": "resume-ner", "version": str(i)}, evidence={"summary": f"step {i}"})
    if n:
        _BUILT[n, anchored] = ledger.path.read_bytes(), anchor.path.read_bytes() if anchor else None
    return ledger


def read_lines(ledger: Ledger) -> list[str]:
    return ledger.path.read_text(encoding="utf-8").splitlines()


def write_lines(ledger: Ledger, lines: list[str]) -> None:
    ledger.path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


def sha256_of(fields: dict) -> str:
    """The hash as the format defines it, computed independently of the module."""
    body = {k: v for k, v in fields.items() if k != "hash"}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def with_hash(fields: dict) -> str:
    return json.dumps({**fields, "hash": sha256_of(fields)}, sort_keys=True)


def only_problem(ledger: Ledger):
    report = ledger.verify()
    assert not report.ok
    assert len(report.problems) == 1, report.describe()
    return report.problems[0]


# --- writing and reading ---------------------------------------------------------------------------------------


def test_append_reads_back_as_a_valid_chain(tmp_path: Path):
    ledger = make_ledger(tmp_path)
    written = [
        ledger.append("training", subject={"run": "r1"}, evidence={"f1": 0.52, "tags": ("a", "b")}),
        ledger.append("promotion", subject={"model": "resume-ner", "version": "3"}, evidence={}, actor="bob@ci"),
    ]
    assert ledger.path.is_file(), "the directory is created on first append"
    read = ledger.entries()
    assert read == written
    assert [e.seq for e in read] == [1, 2]
    assert read[0].prev == GENESIS and read[1].prev == read[0].hash
    assert read[0].evidence["tags"] == ["a", "b"], "the entry returned equals the one read back"
    assert read[0].actor == "alice@laptop" and read[1].actor == "bob@ci"
    assert read[0].time == "2026-11-26T07:15:03.123456Z"
    for line, entry in zip(read_lines(ledger), read, strict=True):
        assert sha256_of(json.loads(line)) == entry.hash
    assert ledger.head() == Head(2, read[1].hash)
    report = ledger.verify()
    assert report.ok and report.problems == () and report.anchor == report.head == Head(2, read[1].hash)
    assert re.fullmatch(r"ledger ok: 2 entries, head seq 2 hash [0-9a-f]{12}\.\.\., anchored", report.describe())


def test_empty_and_unanchored_ledgers(tmp_path: Path):
    ledger = make_ledger(tmp_path, anchored=False)
    assert ledger.entries() == [] and ledger.head() is None
    assert ledger.verify().describe() == "ledger ok: 0 entries, empty, not anchored"
    ledger.append("gate", subject={}, evidence={})
    assert ledger.verify().describe().endswith("not anchored")
    with pytest.raises(LedgerError, match="no anchor"):
        ledger.reanchor()


def test_times_are_utc_with_microseconds(tmp_path: Path):
    ledger = Ledger(
        tmp_path / "l.jsonl", clock=lambda: datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=2)))
    )
    assert ledger.append("gate", subject={}, evidence={}).time == "2026-01-02T01:04:05.000006Z"
    naive = Ledger(tmp_path / "n.jsonl", clock=lambda: datetime(2026, 1, 2))
    with pytest.raises(LedgerError, match="naive"):
        naive.append("gate", subject={}, evidence={})
    real = Ledger(tmp_path / "r.jsonl").append("gate", subject={}, evidence={})
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", real.time) and "@" in real.actor


def test_bad_evidence_is_refused_and_nothing_written(tmp_path: Path):
    ledger = make_ledger(tmp_path, 1)
    with pytest.raises(LedgerError, match="evidence is not JSON-serialisable"):
        ledger.append("gate", subject={}, evidence={"x": object()})
    with pytest.raises(LedgerError, match="evidence is not JSON-serialisable"):
        ledger.append("gate", subject={}, evidence={"x": float("nan")})
    with pytest.raises(LedgerError, match="kind"):
        ledger.append("", subject={}, evidence={})
    assert len(ledger.entries()) == 1 and ledger.verify().ok


def test_find_filters_by_kind_and_subject(tmp_path: Path):
    ledger = make_ledger(tmp_path, 8)
    assert [e.seq for e in ledger.find("promotion")] == [4, 8]
    assert [e.seq for e in ledger.find(version="3")] == [3]
    assert [e.seq for e in ledger.find("gate", model="resume-ner", version="3")] == [3]
    assert ledger.find("gate", version="4") == []
    assert len(ledger.find()) == 8


def test_describe_entry_is_one_readable_line(tmp_path: Path):
    ledger = make_ledger(tmp_path)
    entry = ledger.append(
        "promotion",
        subject={"model": "resume-ner", "version": "3", "stage": "prod"},
        evidence={"reason": "gate passed: f1 0.52 >= 0.40", "scores": {"f1": 0.52, "per_label": list(range(500))}},
    )
    text = describe_entry(entry)
    assert (
        text == "2026-11-26 07:15:03Z  alice@laptop  promotion resume-ner v3 stage=prod (gate passed: f1 0.52 >= 0.40)"
    )
    long = ledger.append("training", subject={"run": "x"}, evidence={"summary": "line one\nline two " + "z" * 500})
    assert "\n" not in describe_entry(long) and len(describe_entry(long)) < 200
    assert describe_entry(ledger.append("gate", subject={}, evidence={"blob": "secret"})).endswith("  gate")


# --- tampering: each is named by entry and line, once --------------------------------------------------------------


def test_edited_field_names_the_entry(tmp_path: Path):
    ledger = make_ledger(tmp_path, 6)
    lines = read_lines(ledger)
    edited = json.loads(lines[2])
    edited["actor"] = "mallory"
    lines[2] = json.dumps(edited)
    write_lines(ledger, lines)
    problem = only_problem(ledger)
    assert (problem.kind, problem.seq, problem.line) == ("edited", 3, 3)
    assert "entry 3 (gate at 2026-11-26T07:15:05.123456Z, by mallory)" in problem.message
    assert "no longer matches its hash" in problem.message
    with pytest.raises(LedgerError, match="not re-anchoring"):
        ledger.reanchor()


def test_edit_with_recomputed_hash_is_caught_by_the_next_link(tmp_path: Path):
    ledger = make_ledger(tmp_path, 6)
    lines = read_lines(ledger)
    edited = json.loads(lines[2])
    edited["evidence"] = {"summary": "forged"}
    del edited["hash"]
    lines[2] = with_hash(edited)
    write_lines(ledger, lines)
    problem = only_problem(ledger)
    assert (problem.kind, problem.seq, problem.line) == ("edited", 3, 3)
    assert "entry 3 " in problem.message and "hash recomputed" in problem.message and "entry 4" in problem.message


def test_deleted_entry_gives_one_clear_problem(tmp_path: Path):
    ledger = make_ledger(tmp_path, 8)
    lines = read_lines(ledger)
    del lines[4]
    write_lines(ledger, lines)
    problem = only_problem(ledger)
    assert (problem.kind, problem.seq, problem.line) == ("deleted", 5, 5)
    assert problem.message == "entry 5 is missing (deleted): line 5 holds entry 6"


def test_edited_seq_field_is_one_problem_at_its_place_in_the_chain(tmp_path: Path):
    for rehash in (False, True):
        ledger = make_ledger(tmp_path / str(rehash), 8)
        lines = read_lines(ledger)
        edited = json.loads(lines[4])
        edited["seq"] = 50
        if rehash:
            del edited["hash"]
        lines[4] = with_hash(edited) if rehash else json.dumps(edited)
        write_lines(ledger, lines)
        problem = only_problem(ledger)
        assert (problem.kind, problem.seq, problem.line) == ("edited", 5, 5)
        assert problem.message.startswith("entry 5 (training at") and "its seq field reads 50" in problem.message


def test_inserted_forged_line_is_named(tmp_path: Path):
    ledger = make_ledger(tmp_path, 6)
    lines = read_lines(ledger)
    real = [json.loads(line) for line in lines]
    fork = {**real[2], "actor": "mallory", "evidence": {"summary": "approved"}}  # a second entry 3 linked to entry 2
    del fork["hash"]
    lines.insert(3, with_hash(fork))
    lines.insert(6, json.dumps({**real[4], "hash": "f" * 64, "kind": "rollback"}))  # a bad copy of entry 5
    write_lines(ledger, lines)
    report = ledger.verify()
    assert not report.ok
    assert [(p.kind, p.seq, p.line) for p in report.problems] == [("inserted", 3, 4), ("inserted", 5, 7)]
    assert "second entry 3 (gate at" in report.problems[0].message and "mallory" in report.problems[0].message
    assert "entry 3 is on line 3" in report.problems[0].message


def test_swapped_lines_are_one_reordering(tmp_path: Path):
    ledger = make_ledger(tmp_path, 8)
    lines = read_lines(ledger)
    lines[3], lines[4] = lines[4], lines[3]
    write_lines(ledger, lines)
    problem = only_problem(ledger)
    assert problem.kind == "reordered" and problem.seq in (4, 5) and problem.line in (4, 5)
    assert f"entry {problem.seq} " in problem.message and "out of order" in problem.message


@pytest.mark.parametrize(
    ("move", "named"),
    [
        (
            lambda lines: [lines[7], *lines[:7]],
            "entry 8 (promotion at 2026-11-26T07:15:10.123456Z, by alice@laptop) on "
            "line 1 is out of order: it comes before entry 7 (line 8)",
        ),
        (
            lambda lines: [*lines[1:], lines[0]],
            "entry 2 (registration at 2026-11-26T07:15:04.123456Z, by alice@laptop) "
            "on line 1 is out of order: it comes before entry 1 (line 8)",
        ),
    ],
)
def test_a_moved_entry_is_one_reordering(tmp_path: Path, move, named: str):
    ledger = make_ledger(tmp_path, 8)
    write_lines(ledger, move(read_lines(ledger)))
    problem = only_problem(ledger)
    assert (problem.kind, problem.line, problem.message) == ("reordered", 1, named)


def test_cut_off_tail_is_caught_by_the_anchor_and_blocks_appends(tmp_path: Path):
    ledger = make_ledger(tmp_path, 10)
    write_lines(ledger, read_lines(ledger)[:-2])
    problem = only_problem(ledger)
    assert (problem.kind, problem.seq) == ("truncated", 9)
    assert "entries 9-10 are missing at the end" in problem.message
    with pytest.raises(LedgerError, match="entries 9-10"):
        ledger.append("gate", subject={}, evidence={})  # would hide the cut
    with pytest.raises(LedgerError, match="not re-anchoring"):
        ledger.reanchor()
    assert len(ledger.entries()) == 8
    assert ledger.reanchor(force=True) == ledger.head() and ledger.verify().ok


def test_tail_rewritten_with_recomputed_hashes_is_caught_by_the_anchor(tmp_path: Path):
    ledger = make_ledger(tmp_path, 10)
    write_lines(ledger, read_lines(ledger)[:7])
    forger = Ledger(ledger.path, default_actor="mallory", clock=ticking_clock())  # appends a well-formed chain
    for i in range(3):
        forger.append("promotion", subject={"model": "resume-ner", "version": "evil"}, evidence={"i": i})
    problem = only_problem(ledger)
    assert (problem.kind, problem.seq, problem.line) == ("edited", 10, 10)
    assert "entry 10 (promotion" in problem.message and "not the entry the anchor records" in problem.message
    with pytest.raises(LedgerError, match="not appending"):
        ledger.append("gate", subject={}, evidence={})


def test_unparseable_line_is_named(tmp_path: Path):
    ledger = make_ledger(tmp_path, 6)
    lines = read_lines(ledger)
    lines[3] = lines[3][:40] + "}"
    lines.insert(1, "not json at all")
    write_lines(ledger, lines)
    report = ledger.verify()
    assert [(p.kind, p.seq, p.line) for p in report.problems] == [("unparseable", 2, 2), ("unparseable", 4, 5)]
    assert "line 5 (entry 4) does not parse" in report.problems[1].message
    with pytest.raises(LedgerError, match="line 2 does not parse"):
        ledger.entries()
    write_lines(ledger, [*read_lines(ledger)[:-1], ""])  # the anchored last entry: no "truncated" on top
    assert [(p.kind, p.seq, p.line) for p in ledger.verify().problems][-1] == ("unparseable", 6, 7)
    assert "line 7 (entry 6) does not parse: the line is empty" in ledger.verify().describe()


# --- the anchor and a broken tail -----------------------------------------------------------------------------------


class FlakyAnchor(FileAnchor):
    """A real file anchor whose next write fails, as a full disk would make it."""

    fail_next = False

    def write(self, head: Head) -> None:
        if self.fail_next:
            self.fail_next = False
            raise OSError("No space left on device")
        super().write(head)


def test_anchor_behind_is_a_warning_that_reanchor_repairs(tmp_path: Path):
    anchor = FlakyAnchor(tmp_path / "head.json")
    ledger = Ledger(tmp_path / "ledger.jsonl", anchor, default_actor="ci")
    ledger.append("training", subject={}, evidence={})
    anchor.fail_next = True
    with pytest.raises(LedgerError, match="entry 2 was recorded but the anchor was not updated"):
        ledger.append("registration", subject={}, evidence={})
    report = ledger.verify()
    assert report.ok and report.errors == ()
    assert [(p.kind, p.seq) for p in report.warnings] == [("anchor_behind", 1)]
    assert "warning: the anchor is behind: it records entry 1" in report.describe()
    assert "entry 2 (registration" in report.describe() and report.describe().startswith("ledger ok: 2 entries")
    assert ledger.reanchor() == ledger.head() == anchor.read()
    assert ledger.verify().problems == ()
    anchor.fail_next = True
    with pytest.raises(LedgerError):
        ledger.append("gate", subject={}, evidence={})
    ledger.append("promotion", subject={}, evidence={})  # building on a lagging anchor moves it on
    assert ledger.verify().problems == () and anchor.read().seq == 4


class UnreachableAnchor(FileAnchor):
    """A real file anchor that can be made unreachable, as a registry is while its server is down."""

    down = False

    def read(self) -> Head | None:
        if self.down:
            raise ConnectionError("connection refused")
        return super().read()

    def write(self, head: Head) -> None:
        if self.down:
            raise ConnectionError("connection refused")
        super().write(head)


def test_a_remote_anchor_may_lag_and_catches_up(tmp_path: Path):
    remote = UnreachableAnchor(tmp_path / "registry" / "head.json")
    ledger = Ledger(tmp_path / "ledger.jsonl", FileAnchor(tmp_path / "head.json"), remote=remote, default_actor="ci")
    ledger.append("training", subject={}, evidence={})
    remote.down = True
    ledger.append("traffic_change", subject={}, evidence={})  # the registry is down: the append goes on
    assert [p.kind for p in ledger.verify().problems] == ["anchor_unreachable"] and ledger.verify().ok
    with pytest.raises(ConnectionError):
        ledger.catch_up()
    remote.down = False
    report = ledger.verify()
    assert report.ok and [(p.kind, p.seq) for p in report.problems] == [("anchor_behind", 1)]
    assert "the registry anchor is behind: it records entry 1" in report.describe()
    assert ledger.catch_up() == (Head(1, ledger.entries()[0].hash), ledger.head())
    assert ledger.verify().problems == () and "registry anchor at the head" in ledger.verify().describe()


def test_a_remote_anchor_still_catches_a_cut_off_tail_when_the_local_one_is_rewritten(tmp_path: Path):
    remote = UnreachableAnchor(tmp_path / "registry" / "head.json")
    local = FileAnchor(tmp_path / "head.json")
    ledger = Ledger(tmp_path / "ledger.jsonl", local, remote=remote, default_actor="ci")
    for kind in KINDS:
        ledger.append(kind, subject={}, evidence={})
    write_lines(ledger, read_lines(ledger)[:-1])
    local.write(Head(3, ledger.entries()[-1].hash))  # whoever cut the file rewrote the local anchor too
    problem = only_problem(ledger)
    assert problem.kind == "truncated" and "the registry anchor records entry 4" in problem.message


def test_a_state_folder_from_before_the_local_anchor_adopts_it_on_the_next_append(tmp_path: Path):
    remote = FileAnchor(tmp_path / "registry" / "head.json")
    old = Ledger(tmp_path / "ledger.jsonl", remote, default_actor="ci")  # as it was: the registry anchor only
    old.append("promotion", subject={"model": "m", "version": "1"}, evidence={})
    ledger = Ledger(old.path, FileAnchor(tmp_path / "head.json"), remote=remote, default_actor="ci")
    assert ledger.verify().ok and ledger.verify().problems == ()
    assert "local anchor not written yet" in ledger.verify().describe()
    ledger.append("approval", subject={"model": "m", "version": "2"}, evidence={})
    assert ledger.anchor.read() == remote.read() == ledger.head()
    ledger.anchor.path.unlink()
    assert ledger.catch_up() == (ledger.head(), ledger.head()) and ledger.anchor.read() == ledger.head()


def test_compare_and_append_refuses_returns_or_appends_inside_the_lock(tmp_path: Path):
    ledger = make_ledger(tmp_path, 2)
    seen = []

    def refuse(entries):
        seen.append(len(entries))
        raise LedgerError("the precondition no longer holds")

    with pytest.raises(LedgerError, match="no longer holds"):
        ledger.append("gate", subject={}, evidence={}, check=refuse)
    first = ledger.entries()[0]
    assert ledger.append("gate", subject={}, evidence={}, check=lambda entries: entries[0]) == first
    added = ledger.append("gate", subject={}, evidence={}, check=lambda entries: None)
    assert seen == [2] and added.seq == 3 and len(ledger.entries()) == 3


def test_who_acted_is_recorded_and_a_credential_only_by_fingerprint(tmp_path: Path):
    from nerops.actors import acted_by, os_user

    ledger = Ledger(tmp_path / "ledger.jsonl", context=lambda: acted_by(credential="s3cret-key"))
    entry = ledger.append("traffic_change", subject={}, evidence={"summary": "x"})
    who = entry.evidence["acted_by"]
    assert who["os_user"] == os_user() and who["credential"].startswith("sha256:") and "flow_run" not in who
    assert "s3cret-key" not in ledger.path.read_text()
    given = ledger.append("gate", subject={}, evidence={"acted_by": {"os_user": "ops"}})
    assert given.evidence["acted_by"] == {"os_user": "ops"}  # what the caller recorded is kept


def test_missing_anchor_is_an_error_until_reanchored(tmp_path: Path):
    ledger = make_ledger(tmp_path, 3)
    ledger.anchor.path.unlink()
    problem = only_problem(ledger)
    assert problem.kind == "anchor_missing" and "3 entries" in problem.message
    with pytest.raises(LedgerError, match="anchor holds no head"):
        ledger.append("gate", subject={}, evidence={})
    ledger.anchor.path.write_text("{broken")
    assert only_problem(ledger).kind == "anchor_missing"
    assert ledger.reanchor() == Head(3, ledger.entries()[-1].hash)
    assert ledger.verify().problems == ()


def test_partial_last_line_refuses_append_until_discarded(tmp_path: Path):
    ledger = make_ledger(tmp_path, 5)
    with ledger.path.open("ab") as file:
        file.write(b'{"v":1,"seq":6,"time":"2026-')  # a crash mid-write
    with pytest.raises(LedgerError, match=r"line 6 is a partial line"):
        ledger.append("gate", subject={}, evidence={})
    with pytest.raises(LedgerError, match="line 6"):
        ledger.head()
    problem = only_problem(ledger)
    assert (problem.kind, problem.seq, problem.line) == ("truncated", 6, 6)
    assert ledger.discard_partial_line() == len(b'{"v":1,"seq":6,"time":"2026-')
    assert ledger.discard_partial_line() == 0
    assert ledger.append("repair", subject={}, evidence={"reason": "dropped a partial line"}).seq == 6
    assert ledger.verify().problems == ()


def test_broken_last_entry_refuses_append(tmp_path: Path):
    ledger = make_ledger(tmp_path, 3, anchored=False)
    lines = read_lines(ledger)
    lines[-1] = lines[-1].replace("step 3", "step 9")
    write_lines(ledger, lines)
    with pytest.raises(LedgerError, match="line 3: entry 3 no longer matches its hash"):
        ledger.append("gate", subject={}, evidence={})


# --- concurrency ---------------------------------------------------------------------------------------------------


def _append_many(path: str, anchor: str | None, name: str, count: int, start) -> None:
    ledger = Ledger(Path(path), FileAnchor(Path(anchor)) if anchor else None, default_actor=name)
    start.wait(30)
    for i in range(count):
        ledger.append("training", subject={"worker": name, "i": str(i)}, evidence={"i": i})


def append_from_two_processes(path: Path, anchor: Path | None, count: int) -> list[Entry]:
    """Two processes, started together, each append ``count`` entries to one ledger."""
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else "spawn")
    start = context.Event()
    args = [(str(path), str(anchor) if anchor else None, name, count, start) for name in ("a", "b")]
    workers = [context.Process(target=_append_many, args=a) for a in args]
    for worker in workers:
        worker.start()
    start.set()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    entries = Ledger(path).entries()
    assert [e.seq for e in entries] == list(range(1, 2 * count + 1)), "no gaps, no repeats"
    for name in ("a", "b"):
        assert [e.subject["i"] for e in entries if e.actor == name] == [str(i) for i in range(count)]
    return entries


def test_two_processes_appending_at_once_lose_nothing(tmp_path: Path):
    path = tmp_path / "shared" / "ledger.jsonl"
    entries = append_from_two_processes(path, None, 200)
    report = Ledger(path).verify()
    assert report.ok and report.problems == () and report.head == Head(400, entries[-1].hash)


def test_two_anchored_processes_leave_the_anchor_at_the_head(tmp_path: Path):
    path, anchor = tmp_path / "shared" / "ledger.jsonl", tmp_path / "shared" / "head.json"
    entries = append_from_two_processes(path, anchor, 25)  # each anchor write costs two more fsyncs: fewer entries
    report = Ledger(path, FileAnchor(anchor)).verify()
    assert report.problems == () and report.anchor == report.head == Head(50, entries[-1].hash)


class DownRegistry:
    """The two registry calls an anchor makes, against a registry that is down until told otherwise."""

    def __init__(self) -> None:
        self.down, self.calls, self.value = True, 0, None

    def read_anchor(self) -> str | None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        return self.value

    def write_anchor(self, value: str) -> None:
        self.calls += 1
        if self.down:
            raise ConnectionError("connection refused")
        self.value = value


def test_appends_during_a_registry_outage_do_not_each_wait_for_it(tmp_path: Path):
    from nerops.registry.anchor import RegistryAnchor

    registry = DownRegistry()
    ledger = Ledger(tmp_path / "l.jsonl", FileAnchor(tmp_path / "head.json"), remote=RegistryAnchor(registry))
    for n in range(3):
        ledger.append("traffic_change", subject={}, evidence={"n": n})
    assert registry.calls == 1, "only the first append tried the registry"
    registry.down = False
    assert ledger.catch_up()[1] == ledger.head() and registry.value == f"3:{ledger.head().hash}"
