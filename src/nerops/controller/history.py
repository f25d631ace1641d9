"""Rollout history and after-the-fact reports, read from the record, its evidence file and the ledger only.

    summarize(record, looks, entries) -> RolloutSummary   outcome, duration, time to decision, blast radius
    list_table(summaries) -> str                          ``nerops rollout list``
    gather(store, record, settings) -> Sources            the I/O: evidence lines, ledger entries, verify, sha256
    render_markdown(sources) / render_html(sources)       one rollout: plan, decisions with their evidence, ledger

Never the telemetry store, never Prefect: every value a report shows (the metric values, the samples, the
e-values, the queries run) was copied into the evidence file at the look that saw it, so a report made after
the telemetry retention or without the Prefect database reads the same. Reports hold no wall clock of their
own: the same files give the same bytes.
"""

from __future__ import annotations

import hashlib
import html
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from nerops.controller.records import RecordStore, RolloutRecord
from nerops.errors import LedgerError
from nerops.ledger import Entry, FileAnchor, Ledger
from nerops.rollout.machine import ENDED
from nerops.settings import Settings
from nerops.telemetry.durations import format_duration


@dataclass(frozen=True)
class RolloutSummary:
    rollout: str
    model: str
    version: str
    outcome: str  # the phase it ended in, or "running"
    phase: str
    started: float
    duration: float  # to its end, or so far (to the last save) while running
    time_to_decision: float | None  # from the first look with live candidate requests to the look that ended it
    decision_note: str  # in words, also when there is no time to show
    blast_radius: float | None  # candidate's share of the live requests both arms answered (None: unknown)
    answered: dict | None  # per traffic class, requests each arm answered (the last look that counted them)
    ledger_seqs: tuple[int, int] | None  # first and last seq of this rollout's ledger entries

    @property
    def candidate_live(self) -> int | None:
        return None if self.answered is None else _live(self.answered)


def belongs(entry: Entry, rollout: str) -> bool:
    """An entry of this rollout: its own kinds, and the endpoint's changes and champion change it caused."""
    evidence = entry.evidence
    return rollout in (entry.subject.get("rollout"), evidence.get("correlation_id"), evidence.get("rollout"))


def summarize(record: RolloutRecord, looks: list[dict], entries: list[Entry]) -> RolloutSummary:
    state, ended = record.state, record.ended
    started = float(state.get("started") or record.created)
    spans = state.get("steps") or []
    end = spans[-1].get("end") if ended and spans else None
    finished = float(end if end is not None else record.updated)
    counted = [line["answered"] for line in looks if "answered" in line]
    first_live = next((line["time"] for line in looks if _live(line.get("answered", {})) > 0), None)
    decided = next((line["time"] for line in looks if line.get("phase") in ENDED), finished if ended else None)
    never_live = max(state.get("weights") or [0]) == 0  # no live request was ever routed to it
    answered = counted[-1] if counted else ({"live": {"candidate": 0, "stable": 0}} if never_live else None)
    blast = None
    if answered is not None:
        arms = answered.get("live", {})
        total = arms.get("candidate", 0) + arms.get("stable", 0)
        blast = arms.get("candidate", 0) / total if total else 0.0
    to_decision = None
    if not ended:
        note = "not decided yet"
    elif first_live is not None and decided is not None:
        to_decision = max(0.0, decided - first_live)
        note = f"{format_duration(round(to_decision, 1))} from the first look that counted live candidate requests"
        exposed = next((span["start"] for span in spans if span.get("kind") in ("canary", "bake")), None)
        if exposed is not None:
            note += f"; {format_duration(round(max(0.0, decided - exposed), 1))} after it first took live traffic"
    elif never_live or counted:
        note = "decided before any live request"
    else:
        note = "unknown: the evidence predates request counts"
    seqs = sorted(e.seq for e in entries if belongs(e, record.rollout_id))
    return RolloutSummary(
        record.rollout_id,
        record.model,
        record.version,
        str(state.get("phase")) if ended else "running",
        str(state.get("phase")),
        started,
        max(0.0, finished - started),
        to_decision,
        note,
        blast,
        answered,
        (seqs[0], seqs[-1]) if seqs else None,
    )


def list_table(rows: list[RolloutSummary]) -> str:
    """``nerops rollout list`` as text: one line per rollout, columns aligned."""
    table = [("rollout", "outcome", "started", "duration", "to decision", "blast radius", "candidate live")]
    for s in rows:
        to_decision = format_duration(round(s.time_to_decision)) if s.time_to_decision is not None else "-"
        radius = "unknown" if s.blast_radius is None else f"{100 * s.blast_radius:.1f} %"
        live = "unknown" if s.candidate_live is None else str(s.candidate_live)
        duration = format_duration(round(s.duration))
        table.append((s.rollout, s.outcome, when(s.started), duration, to_decision, radius, live))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)


def _live(answered: dict) -> int:
    return int(answered.get("live", {}).get("candidate", 0))


@dataclass(frozen=True)
class Sources:
    """Everything a report shows, read once (:func:`gather`)."""

    record: RolloutRecord
    looks: list[dict]
    entries: list[Entry]  # this rollout's ledger entries
    verify: str  # the ledger's verify result, in words
    verified: bool
    evidence_name: str  # the evidence file as the report names it (relative to the state folder)
    evidence_lines: int
    evidence_sha256: str
    evidence_check: list[str]  # what the sha256 comparison found; problems start with "MISMATCH"


def gather(store: RecordStore, record: RolloutRecord, settings: Settings) -> Sources:
    """Read the evidence file and the ledger (verified against its local anchor only: the registry may be down)."""
    from nerops.controller import evidence

    path = store.evidence_path(record)
    data = path.read_bytes() if path.exists() else b""
    ledger = Ledger(settings.ledger_path, FileAnchor(settings.ledger_anchor_path))
    entries: list[Entry] = []
    if not ledger.path.exists():
        verified, said = False, "there is no ledger in the state folder"
    else:
        try:
            entries = [e for e in ledger.entries() if belongs(e, record.rollout_id)]
            report = ledger.verify()
            verified, said = report.ok, report.describe()
        except LedgerError as exc:
            verified, said = False, f"the ledger cannot be read: {exc}"
    name = str(path.relative_to(settings.state)) if path.is_relative_to(settings.state) else str(path)
    return Sources(
        record,
        evidence.read(path),
        entries,
        said,
        verified,
        name,
        data.count(b"\n"),
        hashlib.sha256(data).hexdigest(),
        evidence_check(data, entries),
    )


def evidence_check(data: bytes, entries: list[Entry]) -> list[str]:
    """Each ledger entry that recorded the evidence file's sha256 against the file's first lines."""
    prefix, hashes = hashlib.sha256(), {0: hashlib.sha256(b"").hexdigest()}
    for n, line in enumerate(data.splitlines(keepends=True), 1):
        prefix.update(line)
        hashes[n] = prefix.hexdigest()
    recorded = [e for e in entries if "evidence_sha256" in e.evidence]
    found = []
    for e in recorded:
        lines, sha = int(e.evidence.get("evidence_lines", 0)), e.evidence["evidence_sha256"]
        if hashes.get(lines) != sha:
            found.append(
                f"MISMATCH: entry {e.seq} ({e.kind}) records sha256 {sha[:16]}... of {lines} lines; the file's first "
                f"{lines} lines hash to {(hashes.get(lines) or 'nothing: it is shorter')[:16]}"
            )
    if not recorded:
        return ["MISMATCH: no ledger entry records this evidence file's sha256"]
    if not found:
        last = max(int(e.evidence.get("evidence_lines", 0)) for e in recorded)
        found.append(f"evidence file matches the ledger: the {len(recorded)} entries that record its sha256 agree")
        if len(hashes) - 1 > last:
            found.append(f"{len(hashes) - 1 - last} looks after the last ledger entry (not yet covered by it)")
    return found


# --- the report, as blocks both renderers share -----------------------------------------------------------


def number(value: object) -> str:
    """How a report prints a value: None as "-", floats to 6 significant digits."""
    if value is None:
        return "-"
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def when(seconds: float | None) -> str:
    return "-" if seconds is None else datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def _after(seconds: float, start: float) -> str:
    return f"+{format_duration(round(max(0.0, seconds - start), 1))}"


def _metric_rows(look: dict) -> list[list[str]]:
    return [
        [
            m["metric"],
            m["mode"],
            m["tested"] or "-",
            m["status"],
            f"{number(m['e_value'])} / {number(m['threshold'])}",
            number(m["candidate"]),
            number(m["stable"]),
            f"{number(m['candidate_samples'])} / {number(m['stable_samples'])} (min {m['min_samples']})",
            number(m["strata"]),
            ", ".join(m["traffic"]),
        ]
        for m in sorted(look.get("metrics", []), key=lambda m: m["status"] != "unhealthy")
    ]


def blocks(src: Sources) -> list[tuple]:
    r, looks, s = src.record, src.looks, summarize(src.record, src.looks, src.entries)
    start = s.started
    started = next((e for e in src.entries if e.kind == "rollout_started"), None)
    plan = (started.evidence.get("steps") if started else None) or []
    out: list[tuple] = [
        ("h1", f"Rollout {r.rollout_id}: {s.outcome}"),
        (
            "kv",
            [
                ("model", f"{r.model} v{r.version} on endpoint {r.endpoint}"),
                ("candidate", f"{r.candidate} (v{r.version})"),
                ("stable", f"{r.stable or '-'} (v{r.stable_version or '-'})"),
                ("profile", r.profile),
                ("policy sha256", r.policy_sha256),
                ("outcome", s.outcome + ("" if s.outcome != "running" else f" ({s.phase})")),
                ("ending", r.state.get("ending") or "-"),
                ("started", when(start)),
                ("duration", format_duration(round(s.duration, 1)) + ("" if r.ended else " so far")),
                ("time to decision", s.decision_note),
                ("blast radius", "unknown" if s.blast_radius is None else f"{100 * s.blast_radius:.1f} % of live"),
                ("requests answered", _answered(s.answered)),
                ("traffic steps", " -> ".join(f"{w} %" for w in r.state.get("weights", []))),
            ],
        ),
        ("h2", "The plan"),
        ("p", f"Steps from ledger entry {started.seq}" if started else "No rollout_started entry in the ledger."),
    ]
    spans = {span["index"]: span for span in r.state.get("steps", [])}
    out.append(
        (
            "table",
            ["step", "plan", "entered", "left"],
            [
                [str(i), label, _span(spans.get(i), "start", start), _span(spans.get(i), "end", start)]
                for i, label in enumerate(plan)
            ],
        )
    )
    deciding = {int(e.evidence.get("evidence_lines", 0)) for e in src.entries if e.kind == "rollout_decision"}
    rows: list[list[str]] = []
    previous: dict = {}
    for n, line in enumerate(looks, 1):
        verdict = line.get("look", {})
        changed = (line.get("step"), line.get("phase"), verdict.get("status")) != (
            previous.get("step"),
            previous.get("phase"),
            previous.get("look", {}).get("status"),
        )
        if "command" in line or changed or n in deciding:
            what = f"{line['command']['verb']} by {line['command']['actor']}" if "command" in line else None
            why = line["command"]["reason"] if "command" in line else verdict.get("reason", "")
            row = [str(n), _after(line["time"], start), number(line.get("step")), line.get("phase", "-")]
            rows.append([*row, f"{line.get('weight')} %", what or verdict.get("status", "-"), _short(why)])
        previous = line if "look" in line else {**line, "look": previous.get("look", {})}
    out += [("h2", "Looks, commands and decisions"), ("p", _changes_note(len(looks)))]
    out.append(("table", ["look", "time", "step", "phase", "weight", "verdict or command", "reason"], rows))
    out.append(("h2", "Decisions and their evidence"))
    for n in sorted(deciding):
        decisions = [e for e in src.entries if e.kind == "rollout_decision" and e.evidence.get("evidence_lines") == n]
        kinds = ", ".join(str(e.evidence.get("decision")) for e in decisions)
        out.append(("h3", f"Look {n}: {kinds}" if n else f"At the start: {kinds}"))
        out += [
            ("p", f"Ledger entry {e.seq} ({e.evidence.get('decision')}): {_short(e.evidence.get('summary', ''))}")
            for e in decisions
        ]
        line = looks[n - 1] if 0 < n <= len(looks) else {}
        out += _look_blocks(line, start)
    out += [
        ("h2", "Ledger"),
        ("p", f"This rollout's entries: seq {s.ledger_seqs[0]}..{s.ledger_seqs[1]} ({len(src.entries)} entries)")
        if s.ledger_seqs
        else ("alert", "The ledger holds no entry of this rollout."),
        (
            "table",
            ["seq", "time", "actor", "kind", "what"],
            [[str(e.seq), e.time, e.actor, e.kind, _what(e)] for e in src.entries],
        ),
        (
            "p",
            "Verify: the hash chain of every entry and the local anchor (ledger/head.json); not the registry's anchor.",
        ),
        (
            "pre" if src.verified else "alert",
            src.verify if src.verified else f"LEDGER FAILS VERIFICATION: {src.verify}",
        ),
        ("h2", "Evidence file"),
        ("kv", [("file", src.evidence_name), ("lines", str(src.evidence_lines)), ("sha256", src.evidence_sha256)]),
        *[("alert" if c.startswith("MISMATCH") else "p", c) for c in src.evidence_check],
    ]
    if started and started.evidence.get("policy"):
        out += [("h2", f"The policy in force (ledger entry {started.seq})"), ("pre", started.evidence["policy"])]
    out.append(
        (
            "footer",
            "Made from the rollout record, its evidence file and the ledger only: not the telemetry store, not "
            "Prefect. The values are those the judge saw at each look, written into the evidence file then.",
        )
    )
    return out


def _look_blocks(line: dict, start: float) -> list[tuple]:
    if "command" in line:
        c = line["command"]
        return [("p", f"{c['verb']} by {c['actor']}: {c['reason']}")]
    look = line.get("look")
    if not look:
        return []
    window = look.get("window")
    said = f"Verdict {look['status']} at {_after(line['time'], start)}: {look['reason']}"
    out: list[tuple] = [("p", said)]
    if window:
        out.append(("p", f"Window judged: {when(window[0])} to {when(window[1])}, every {number(look['interval'])} s."))
    out += [("alert", f"hard failure: {h}") for h in look.get("hard_failures", [])]
    out += [("p", f"problem: {p}") for p in look.get("problems", [])]
    if "answered" in line:
        out.append(("p", f"Requests answered since the rollout began: {_answered(line['answered'])}."))
    if look.get("metrics"):
        headers = ["metric", "mode", "tested (null)", "status", "e-value / threshold", "candidate", "stable"]
        out.append(("table", [*headers, "samples candidate / stable", "strata", "traffic"], _metric_rows(look)))
    out += [("pre", f"{cls}: {query}") for cls, query in sorted(look.get("queries", {}).items())]
    return out


def _answered(answered: dict | None) -> str:
    if answered is None:
        return "unknown (the evidence predates request counts)"
    return "; ".join(
        f"{cls}: candidate {c.get('candidate', 0)}, stable {c.get('stable', 0)}" for cls, c in answered.items()
    )


def _span(span: dict | None, key: str, start: float) -> str:
    return "-" if span is None or span.get(key) is None else _after(span[key], start)


def _changes_note(count: int) -> str:
    return f"{count} looks in all; shown: each change of step, phase or verdict, every command and every decision."


def _what(entry: Entry) -> str:
    """The entry in a few words (the whole evidence stays in the ledger)."""
    e, kind = entry.evidence, entry.kind
    if kind == "traffic_change":
        return f"traffic {e.get('after', {}).get('traffic')}, mirror {e.get('after', {}).get('mirror')}"
    if kind == "deployment_scaled":
        return f"{entry.subject.get('deployment')}: {e.get('from')} -> {e.get('to')} instances"
    if kind.startswith("deployment_"):
        return _short(f"{entry.subject.get('deployment')}: {e.get('reason', '')}")
    if kind == "rollout_finished":
        return _short(f"{e.get('phase')}: {e.get('ending', '')}")
    if kind == "rollback":
        return _short(f"v{entry.subject.get('version')} archived ({e.get('archived')}), back to v{e.get('to_version')}")
    if e.get("summary") or e.get("reason"):
        return _short(e.get("summary") or e["reason"])
    return _short(", ".join(f"{k}={v}" for k, v in e.items() if isinstance(v, str | int | float) and k != "policy"))


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def render_markdown(src: Sources) -> str:
    lines: list[str] = []
    for block in blocks(src):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            lines += ["#" * int(kind[1]) + " " + block[1], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "alert":
            lines += [f"> **{block[1]}**", ""]
        elif kind == "footer":
            lines += ["---", "", f"*{block[1]}*", ""]
        elif kind == "pre":
            lines += ["```", block[1].rstrip("\n"), "```", ""]
        elif kind == "kv":
            lines += ["| | |", "|---|---|", *[f"| {k} | {_cell(v)} |" for k, v in block[1]], ""]
        elif kind == "table" and block[2]:
            lines += ["| " + " | ".join(block[1]) + " |", "|" + "---|" * len(block[1])]
            lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block[2]] + [""]
    return "\n".join(lines).rstrip("\n") + "\n"


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


CSS = (
    "body{font-family:system-ui,sans-serif;margin:2em;max-width:80em;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1em}td,th{border:1px solid #ccc;padding:.2em .5em;"
    "text-align:left;vertical-align:top;font-size:.9em}th{background:#f3f3f3}"
    "pre{background:#f7f7f7;padding:.5em;white-space:pre-wrap;font-size:.85em}"
    ".alert{color:#a00;font-weight:bold}footer{color:#666;font-style:italic;margin-top:2em}"
)


def render_html(src: Sources) -> str:
    e = html.escape
    body: list[str] = []
    for block in blocks(src):
        kind = block[0]
        if kind in ("h1", "h2", "h3"):
            body.append(f"<{kind}>{e(block[1])}</{kind}>")
        elif kind in ("p", "alert"):
            body.append(f'<p class="{kind}">{e(block[1])}</p>')
        elif kind == "footer":
            body.append(f"<footer>{e(block[1])}</footer>")
        elif kind == "pre":
            body.append(f"<pre>{e(block[1])}</pre>")
        elif kind == "kv":
            body.append(
                "<table>" + "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in block[1]) + "</table>"
            )
        elif kind == "table" and block[2]:
            head = "".join(f"<th>{e(h)}</th>" for h in block[1])
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in block[2])
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    title = e(f"Rollout {src.record.rollout_id}")
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )


def report_path(settings: Settings, record: RolloutRecord, fmt: str) -> Path:
    """Where ``nerops rollout report`` writes by default: ``reports/`` in the state folder."""
    return settings.state / "reports" / f"{record.rollout_id.replace('/', '-')}.{fmt}"


def write_report(store: RecordStore, record: RolloutRecord, settings: Settings, fmt: str, path: Path | None = None):
    """Write one rollout's report (``md`` or ``html``) to ``path`` (default :func:`report_path`); its path."""
    sources = gather(store, record, settings)
    text = render_markdown(sources) if fmt == "md" else render_html(sources)
    path = path or report_path(settings, record, fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path
