"""An append-only, hash-chained, tamper-evident audit ledger: training, registrations, gates, approvals, champions.

Format: ``path`` is UTF-8 JSONL, one entry per line: ``v`` (1), ``seq`` (1, 2, 3, ...), ``time`` (UTC ISO 8601 with
microseconds and ``Z``), ``actor``, ``kind``, ``subject``, ``evidence``, ``prev`` and ``hash``.

Chain: ``hash`` is the sha256 of the canonical JSON (sorted keys, no spaces, UTF-8) of the entry's other fields, and
``prev`` is the previous entry's hash (``"0" * 64`` for entry 1): a changed entry no longer matches its hash, or, if
its hash was recomputed, the next entry's ``prev``.

Anchor: after each append the head (seq and hash of the last entry) is also written to an ``Anchor`` kept outside the
ledger, so a cut-off tail, or a tail rewritten with recomputed hashes, no longer matches it. Keep the anchor where
whoever can rewrite the ledger file cannot rewrite it too: without signatures, rewriting both goes unnoticed.
A second, ``remote`` anchor (the registry's) may lag: appends never wait for it (a failed write leaves it behind,
a warning), verify() checks the chain against both, and catch_up() brings it to the head once it is reachable.

verify() never raises for tampering; it names the entry and line of: an edited entry, a deleted entry (a gap in
seq), an inserted entry (a second entry with a seq), reordered entries, an unparseable line, a truncated tail (the
anchor is beyond the file, or the last line was cut off mid-write), a rewritten tail (the entry at the anchor's seq has
another hash), and a missing anchor. An anchor behind the file ("anchor_behind": an anchor write failed after an
append) is only a warning, which reanchor() repairs. Entries are placed by their prev links, so one cause gives one
problem: a deleted entry, an edited seq field or a moved line is named once, not with every entry after it.

Concurrency: append() holds an exclusive ``flock`` on ``path + ".lock"`` while it reads the last entry, writes the new
line in one ``os.write`` (O_APPEND), fsyncs and writes the anchor; readers take a shared lock. Several processes may
append at once. append(..., check=f) is a compare-and-append: inside the lock f(entries) sees every entry and either
raises (a refusal), returns an entry already written (an idempotent retry: nothing is appended) or None (append).
A partial last line (a crash mid-write) stops append() until discard_partial_line() removes it.
"""

from __future__ import annotations

import fcntl
import functools
import getpass
import hashlib
import json
import logging
import os
import re
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, get_type_hints

from nerops.errors import LedgerError

VERSION = 1
GENESIS = "0" * 64
WARNING_KINDS = frozenset({"anchor_behind", "anchor_unreachable"})
_SEQ = re.compile(rb'"seq"\s*:\s*(\d{1,18})\b')
_SUMMARY_KEYS = ("summary", "reason", "decision", "message", "status")
log = logging.getLogger("nerops.ledger")


@dataclass(frozen=True)
class Head:
    """The chain head: seq and hash of the last entry."""

    seq: int
    hash: str


class Anchor(Protocol):
    """Where the head is kept outside the ledger, so that a cut-off or rewritten tail is found."""

    def read(self) -> Head | None: ...
    def write(self, head: Head) -> None: ...


class FileAnchor:
    """An Anchor in a small JSON file, replaced atomically (temp file, fsync, os.replace)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def read(self) -> Head | None:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            return Head(int(data["seq"]), str(data["hash"]))
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise LedgerError(f"{self.path}: {exc}") from exc

    def write(self, head: Head) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(asdict(head), file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with suppress(FileNotFoundError):
                os.unlink(tmp)
            raise
        _fsync_dir(self.path.parent)


@dataclass(frozen=True)
class Entry:
    v: int
    seq: int
    time: str
    actor: str
    kind: str
    subject: dict
    evidence: dict
    prev: str
    hash: str

    def computed_hash(self) -> str:
        return _hash_of(vars(self))

    def to_json(self) -> str:
        return _canonical(vars(self))


_TYPES = get_type_hints(Entry)


@dataclass(frozen=True)
class _Seen:
    """A parsed line: its 1-based number, the seq it holds in the chain, and the entry."""

    line: int
    seq: int
    entry: Entry


@dataclass(frozen=True)
class Problem:
    """One finding of verify(); kind is one of edited, deleted, inserted, reordered, truncated, unparseable,
    anchor_missing, or the warnings anchor_behind and anchor_unreachable (the remote anchor could not be read)."""

    line: int | None
    seq: int | None
    kind: str
    message: str


@dataclass(frozen=True)
class VerifyReport:
    """What verify() found; ok is False for any problem but a warning (an anchor behind the ledger)."""

    entries: int
    head: Head | None
    anchor: Head | None
    problems: tuple[Problem, ...]
    remote: Head | None = None

    @property
    def errors(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.kind not in WARNING_KINDS)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.kind in WARNING_KINDS)

    @property
    def ok(self) -> bool:
        return not self.errors

    def describe(self, limit: int = 20) -> str:
        lines = [("warning: " if p.kind in WARNING_KINDS else "") + p.message for p in self.problems[:limit]]
        if len(self.problems) > limit:
            lines.append(f"... and {len(self.problems) - limit} more problems")
        if self.ok:
            head = f"head seq {self.head.seq} hash {self.head.hash[:12]}..." if self.head else "empty"
            state = (
                "not anchored" if self.anchor is None else "anchored" if self.anchor == self.head else "anchor behind"
            )
            if self.anchor is None and self.remote is not None:
                state = "local anchor not written yet (the next append or verify writes it)"
            if self.remote is not None:
                state += ", registry anchor " + ("at the head" if self.remote == self.head else "behind")
            lines.insert(0, f"ledger ok: {self.entries} entries, {head}, {state}")
        return "\n".join(lines)


class Ledger:
    def __init__(
        self,
        path: Path,
        anchor: Anchor | None = None,
        *,
        remote: Anchor | None = None,
        default_actor: str | None = None,
        clock: Callable[[], datetime] | None = None,
        context: Callable[[], dict] | None = None,
    ) -> None:
        self.path = Path(path)
        self.anchor = anchor
        self.remote = remote
        self.context = context  # e.g. nerops.actors.acted_by: added to each entry's evidence as "acted_by"
        self.default_actor = default_actor or _default_actor()
        self.clock = clock or functools.partial(datetime.now, UTC)

    def append(
        self,
        kind: str,
        *,
        subject: dict,
        evidence: dict,
        actor: str | None = None,
        check: Callable[[list[Entry]], Entry | None] | None = None,
    ) -> Entry:
        """Append one entry; with ``check``, only if check(entries), run inside the lock, returns None."""
        actor = actor or self.default_actor
        if not (isinstance(kind, str) and kind and isinstance(actor, str)):
            raise LedgerError(f"an entry needs a non-empty kind and actor (got kind {kind!r})")
        if self.context is not None and "acted_by" not in evidence:
            evidence = {**evidence, "acted_by": self.context()}
        subject, evidence = _plain(subject, "subject"), _plain(evidence, "evidence")
        with self._lock(exclusive=True):
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                last = self._tail(fd)
                if self.anchor is not None and self.anchor.read() != last:
                    report = self._verify()
                    if not report.ok:
                        raise LedgerError(f"{self.path} fails verification, not appending: {report.errors[0].message}")
                if check is not None:
                    done = check(self._entries())
                    if done is not None:
                        return done
                fields = {
                    "v": VERSION,
                    "seq": last.seq + 1 if last else 1,
                    "time": self._now(),
                    "actor": actor,
                    "kind": kind,
                    "subject": subject,
                    "evidence": evidence,
                    "prev": last.hash if last else GENESIS,
                }
                entry = Entry(**fields, hash=_hash_of(fields))
                line = (entry.to_json() + "\n").encode("utf-8")
                if os.write(fd, line) != len(line):
                    raise LedgerError(f"{self.path}: entry {entry.seq} was only partly written")
                os.fsync(fd)
            finally:
                os.close(fd)
            if last is None:
                _fsync_dir(self.path.parent)
            if self.anchor is not None:
                try:
                    self.anchor.write(Head(entry.seq, entry.hash))
                except Exception as exc:
                    raise LedgerError(
                        f"{self.path}: entry {entry.seq} was recorded but the anchor was not updated ({exc}); "
                        "run reanchor()"
                    ) from exc
            if self.remote is not None:
                try:
                    self.remote.write(Head(entry.seq, entry.hash))
                except Exception as exc:  # the registry may be down: it catches up later (catch_up)
                    log.warning("%s: entry %s recorded; the remote anchor is behind (%s)", self.path, entry.seq, exc)
        return entry

    def entries(self) -> list[Entry]:
        with self._lock(exclusive=False):
            return self._entries()

    def _entries(self) -> list[Entry]:
        lines, _ = self._lines()
        out = []
        for n, raw in enumerate(lines, 1):
            try:
                out.append(_parse(raw))
            except ValueError as exc:
                raise LedgerError(f"{self.path} line {n} does not parse: {exc}") from None
        return out

    def head(self) -> Head | None:
        """The last line's entry, as append() builds on it; raises LedgerError if that line is partial or broken."""
        with self._lock(exclusive=False):
            try:
                fd = os.open(self.path, os.O_RDONLY)
            except FileNotFoundError:
                return None
            try:
                return self._tail(fd)
            finally:
                os.close(fd)

    def verify(self) -> VerifyReport:
        with self._lock(exclusive=False):
            return self._verify()

    def find(self, kind: str | None = None, **subject: str) -> list[Entry]:
        return [
            e
            for e in self.entries()
            if (kind is None or e.kind == kind) and all(e.subject.get(k) == v for k, v in subject.items())
        ]

    def reanchor(self, *, force: bool = False) -> Head | None:
        """Write the head to the anchors if verify() finds nothing worse than a lagging or missing anchor (or force)."""
        if self.anchor is None and self.remote is None:
            raise LedgerError(f"{self.path} has no anchor to write")
        with self._lock(exclusive=True):
            report = self._verify()
            blocking = [p for p in report.problems if p.kind not in ("anchor_behind", "anchor_missing")]
            if blocking and not force:
                raise LedgerError(f"not re-anchoring {self.path}: {blocking[0].message} (force=True anchors it as is)")
            if report.head is not None:
                for anchor in (self.anchor, self.remote):
                    if anchor is not None:
                        anchor.write(report.head)
            return report.head

    def catch_up(self) -> tuple[Head | None, Head | None]:
        """Bring a lagging remote anchor to the head (the chain must verify); return (before, after).

        Raises what the remote raises when it is still unreachable; refuses when the chain has a problem.
        """
        if self.remote is None:
            return None, None
        with self._lock(exclusive=True):
            report = self._verify()
            if not report.ok:
                raise LedgerError(f"not catching up the remote anchor of {self.path}: {report.errors[0].message}")
            before = self.remote.read()
            if report.head is not None and before != report.head:
                self.remote.write(report.head)
            if report.head is not None and self.anchor is not None and report.anchor is None:
                self.anchor.write(report.head)  # a state folder from before the local anchor
            return before, report.head

    def partial_line(self) -> tuple[int, int] | None:
        """(line number, bytes) of a last line cut off mid-write, or None when the file ends cleanly."""
        with self._lock(exclusive=False):
            lines, complete = self._lines()
        return None if complete else (len(lines), len(lines[-1]))

    def discard_partial_line(self) -> int:
        """Remove a last line cut off mid-write (never a committed entry); return the bytes removed (0: none)."""
        with self._lock(exclusive=True):
            try:
                fd = os.open(self.path, os.O_RDWR)
            except FileNotFoundError:
                return 0
            try:
                raw, complete = _last_line(fd)
                if complete:
                    return 0
                os.ftruncate(fd, os.fstat(fd).st_size - len(raw))
                os.fsync(fd)
                return len(raw)
            finally:
                os.close(fd)

    @contextmanager
    def _lock(self, *, exclusive: bool) -> Iterator[None]:
        lock = f"{self.path}.lock"
        if exclusive:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        else:
            try:
                fd = os.open(lock, os.O_RDONLY)
            except FileNotFoundError:  # nothing was ever appended
                yield
                return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def _lines(self) -> tuple[list[bytes], bool]:
        """The file's lines without line ends, and whether the last one is complete."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], True
        lines = data.split(b"\n")
        last = lines.pop()  # b"" when the file ends with a line end
        return [*lines, last] if last else lines, not last

    def _tail(self, fd: int) -> Head | None:
        raw, complete = _last_line(fd)
        if complete and not raw and os.fstat(fd).st_size == 0:
            return None
        if not complete:
            message = "is a partial line (a write was cut off): check it, then discard_partial_line()"
            raise LedgerError(f"{self._where_last(fd, complete)} {message}")
        try:
            entry = _parse(raw)
        except ValueError as exc:
            raise LedgerError(f"{self._where_last(fd, complete)} does not parse ({exc}): run verify") from None
        if entry.computed_hash() != entry.hash:
            raise LedgerError(f"{self._where_last(fd, complete)}: entry {entry.seq} no longer matches its hash")
        return Head(entry.seq, entry.hash)

    def _where_last(self, fd: int, complete: bool) -> str:
        newlines = os.pread(fd, os.fstat(fd).st_size, 0).count(b"\n")
        return f"{self.path} line {newlines if complete else newlines + 1}"

    def _now(self) -> str:
        now = self.clock()
        if now.tzinfo is None:
            raise LedgerError("the ledger's clock returned a naive datetime; it must carry a timezone")
        return now.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def _verify(self) -> VerifyReport:
        parsed, unparsed, problems = _parse_lines(*self._lines())
        chain, chain_problems = _check_chain(parsed, unparsed)
        remote, remote_problems = self._check_remote(chain, unparsed)
        anchored, anchor_problems = self._check_anchor(chain, unparsed, self.anchor)
        if anchored is None and self.anchor is not None and remote is not None:
            # a state folder from before the local anchor: the registry's anchor vouches until the next append
            anchor_problems = [
                p for p in anchor_problems if p.kind != "anchor_missing" or "holds no head" not in p.message
            ]
        problems += chain_problems + _check_order(chain) + anchor_problems + remote_problems
        problems.sort(key=lambda p: (p.line is None, p.line or 0))
        head = Head(chain[-1].seq, chain[-1].entry.hash) if chain else None
        return VerifyReport(len(parsed), head, anchored, tuple(problems), remote)

    def _check_remote(self, chain: list[_Seen], unparsed: set[int]) -> tuple[Head | None, list[Problem]]:
        """The remote anchor may lag or be unreachable (warnings); beyond the file or on another hash is an error."""
        if self.remote is None:
            return None, []
        try:
            remote = self.remote.read()
        except Exception as exc:  # noqa: BLE001 - any backend failure: the chain is still checked locally
            return None, [Problem(None, None, "anchor_unreachable", f"the registry anchor cannot be read: {exc}")]
        if remote is None:
            message = f"the registry anchor holds no head yet, the ledger has {len(chain)} entries: catch it up"
            return None, [Problem(None, None, "anchor_behind", message)] if chain else []
        _, problems = self._check_anchor(chain, unparsed, self.remote, name="the registry anchor")
        return remote, problems

    def _check_anchor(
        self, chain: list[_Seen], unparsed: set[int], anchor: Anchor | None, name: str = "the anchor"
    ) -> tuple[Head | None, list[Problem]]:
        if anchor is None:
            return None, []
        try:
            anchored = anchor.read()
        except (LedgerError, OSError, ValueError) as exc:
            return None, [Problem(None, None, "anchor_missing", f"{name} cannot be read: {exc}")]
        if anchored is None:
            message = f"{name} holds no head but the ledger has {len(chain)} entries"
            return None, [Problem(None, None, "anchor_missing", message)] if chain else []
        last = chain[-1].seq if chain else 0
        if anchored.seq > last and not all(s in unparsed for s in range(last + 1, anchored.seq + 1)):
            which = f"entry {last + 1} is" if anchored.seq == last + 1 else f"entries {last + 1}-{anchored.seq} are"
            ends = f"the file ends at entry {last}" if last else "the file holds no entry"
            message = f"{which} missing at the end (truncated): {name} records entry {anchored.seq}, {ends}"
            return anchored, [Problem(None, last + 1, "truncated", message)]
        seen = next((s for s in chain if s.seq == anchored.seq), None)
        if seen is None:  # gone from the middle: already reported as deleted or unparseable
            return anchored, []
        if seen.entry.hash != anchored.hash:
            message = f"{_name(seen)} is not the entry {name} records (hash {anchored.hash[:12]}...)"
            return anchored, [
                Problem(seen.line, seen.seq, "edited", f"{message}: it or entries before it were rewritten")
            ]
        if anchored.seq < last:
            message = f"{name} is behind: it records entry {anchored.seq}, the ledger ends at {_name(chain[-1])}"
            fix = "catch it up" if anchor is self.remote else "reanchor() if that is genuine"
            return anchored, [Problem(None, anchored.seq, "anchor_behind", f"{message}; {fix}")]
        return anchored, []


def describe_entry(entry: Entry) -> str:
    """One line in words: time, actor, kind, subject and a short evidence summary (never the whole evidence)."""
    when = f"{entry.time[:10]} {entry.time[11:19]}Z" if len(entry.time) >= 19 else entry.time
    subject = dict(entry.subject)
    words = [_short(entry.kind, 40)]
    if "model" in subject:
        version = f" v{_short(subject.pop('version'), 20)}" if "version" in subject else ""
        words.append(_short(subject.pop("model"), 60) + version)
    words += [f"{_short(k, 30)}={_short(v, 40)}" for k, v in subject.items()]
    notes = [entry.evidence[k] for k in _SUMMARY_KEYS if isinstance(entry.evidence.get(k), str | int | float)]
    line = f"{when}  {_short(entry.actor, 60)}  {' '.join(words)}"
    return f"{line} ({_short(notes[0])})" if notes else line


def _parse_lines(lines: list[bytes], complete: bool) -> tuple[list[tuple[int, Entry]], set[int], list[Problem]]:
    """Parse every line; unparseable ones become problems, with the seq they probably held."""
    parsed: list[tuple[int, Entry]] = []
    unparsed: set[int] = set()  # no "deleted" for these seqs: the unparseable line already names them
    problems: list[Problem] = []
    for n, raw in enumerate(lines, 1):
        partial = n == len(lines) and not complete
        try:
            parsed.append((n, _parse(raw)))
        except ValueError as exc:
            found = _SEQ.search(raw)
            seq = int(found.group(1)) if found else (parsed[-1][1].seq + 1 if parsed else 1)
            unparsed.add(seq)
            if partial:
                message = f"line {n} (entry {seq}) is cut off: a write was interrupted; discard_partial_line() drops it"
                problems.append(Problem(n, seq, "truncated", message))
            else:
                problems.append(Problem(n, seq, "unparseable", f"line {n} (entry {seq}) does not parse: {exc}"))
            continue
        if partial:
            problems.append(
                Problem(n, parsed[-1][1].seq, "truncated", f"line {n} has no line end: a write was cut off")
            )
    return parsed, unparsed, problems


def _check_chain(parsed: list[tuple[int, Entry]], unparsed: set[int]) -> tuple[list[_Seen], list[Problem]]:
    """Walk the entries in seq order: one entry per seq, each linked to the one before."""
    at = _placed(parsed)
    by_seq: dict[int, list[_Seen]] = {}
    for line, e in parsed:
        by_seq.setdefault(at[e.hash], []).append(_Seen(line, at[e.hash], e))
    chain: list[_Seen] = []
    problems: list[Problem] = []
    expected, prev_hash, prev_ok = 1, GENESIS, True
    for seq in sorted(by_seq):
        seen = _pick(by_seq[seq], prev_hash, {s.entry.prev for s in by_seq.get(seq + 1, [])})
        problems += [_inserted(other, seen) for other in by_seq[seq] if other is not seen]
        if seq != expected and not all(s in unparsed for s in range(expected, seq)):
            which = f"entry {expected} is" if seq == expected + 1 else f"entries {expected}-{seq - 1} are"
            message = f"{which} missing (deleted): line {seen.line} holds entry {seq}"
            problems.append(Problem(seen.line, expected, "deleted", message))
        relinked = seq == expected and seen.entry.prev != prev_hash and prev_ok
        problem = _entry_problem(chain[-1] if chain else None, seen, relinked)
        problems += [problem] if problem else []
        chain.append(seen)
        expected, prev_hash, prev_ok = seq + 1, seen.entry.hash, problem is None or problem.seq != seq
    return chain, problems


def _placed(parsed: list[tuple[int, Entry]]) -> dict[str, int]:
    """Each hash's seq, found by following prev links back to entry 1 (or to where the links break, then trusting the
    seq field there): an entry sits where its prev links it, as its seq field may be what was edited."""
    by_hash = {e.hash: e for _, e in parsed}
    at = {GENESIS: 0}
    for _, entry in parsed:
        path: list[Entry] = []
        on_path: set[str] = set()
        e: Entry | None = entry
        while e is not None and e.hash not in at and e.hash not in on_path:
            path.append(e)
            on_path.add(e.hash)
            e = by_hash.get(e.prev)
        if path:
            seq = at[path[-1].prev] + 1 if path[-1].prev in at else path[-1].seq
            for step, e in enumerate(reversed(path)):
                at[e.hash] = seq + step
    return at


def _entry_problem(before: _Seen | None, seen: _Seen, relinked: bool) -> Problem | None:
    """An edit of this entry, or of the one before when this one's prev no longer matches its (recomputed) hash."""
    if seen.entry.computed_hash() != seen.entry.hash:
        return Problem(
            seen.line, seen.seq, "edited", f"{_name(seen)} was edited: its content no longer matches its hash"
        )
    if seen.entry.seq != seen.seq or (relinked and before is None):
        return Problem(seen.line, seen.seq, "edited", f"{_name(seen)} was edited and its hash recomputed")
    if relinked and before is not None:
        message = f"{_name(before)} was edited and its hash recomputed: entry {seen.seq} on line {seen.line}"
        return Problem(before.line, before.seq, "edited", f"{message} records another hash for it")
    return None


def _inserted(other: _Seen, seen: _Seen) -> Problem:
    message = f"line {other.line} holds a second entry {seen.seq} {_about(other.entry)} that does not fit the chain"
    return Problem(other.line, seen.seq, "inserted", f"{message}: inserted (entry {seen.seq} is on line {seen.line})")


def _pick(candidates: list[_Seen], prev_hash: str, next_prevs: set[str]) -> _Seen:
    """Of several entries with one seq, the one that fits the chain best (then the first)."""
    if len(candidates) == 1:
        return candidates[0]

    def fit(seen: _Seen) -> tuple[int, int]:
        e = seen.entry
        return (e.computed_hash() == e.hash) + (e.prev == prev_hash) + (e.hash in next_prevs), -seen.line

    return max(candidates, key=fit)


def _check_order(chain: list[_Seen]) -> list[Problem]:
    """An entry on an earlier line than the entry before it in the chain: one problem per move, not per later entry."""
    problems = []
    for before, seen in zip(chain, chain[1:], strict=False):
        if seen.line < before.line:
            message = f"{_name(seen)} is out of order: it comes before entry {before.seq} (line {before.line})"
            problems.append(Problem(seen.line, seen.seq, "reordered", message))
    return problems


def _last_line(fd: int) -> tuple[bytes, bool]:
    """The file's last line without its line end, and whether it has one; reads backwards from the end."""
    buf, pos = b"", os.fstat(fd).st_size
    while pos > 0 and b"\n" not in buf[:-1]:
        step = min(pos, 65536)
        pos -= step
        buf = os.pread(fd, step, pos) + buf
    complete = buf.endswith(b"\n") or not buf
    return (buf[:-1] if buf.endswith(b"\n") else buf).rsplit(b"\n", 1)[-1], complete


def _parse(raw: bytes) -> Entry:
    """One line into an Entry; ValueError says what is wrong (never quoting the line)."""
    if not raw.strip():
        raise ValueError("the line is empty")
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ValueError("nested too deeply") from None
    if not isinstance(data, dict) or set(data) != set(_TYPES):
        raise ValueError("not a ledger entry: wrong fields")
    for key, kind in _TYPES.items():
        if not isinstance(data[key], kind) or isinstance(data[key], bool):
            raise ValueError(f"field {key!r} is not a {kind.__name__}")
    if data["v"] != VERSION or data["seq"] < 1:
        raise ValueError(f"unsupported version {data['v']} or seq {data['seq']}")
    return Entry(**data)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _canonical(obj: dict) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def _hash_of(fields: dict) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in fields.items() if k != "hash"}).encode("utf-8")).hexdigest()


def _plain(value: dict, what: str) -> dict:
    """A JSON round trip, so the entry returned equals the one read back (tuples become lists, keys strings)."""
    if not isinstance(value, dict):
        raise LedgerError(f"{what} must be a dict, not {type(value).__name__}")
    try:
        return json.loads(_canonical(value))
    except (TypeError, ValueError) as exc:
        raise LedgerError(f"{what} is not JSON-serialisable: {exc}") from None


def _name(seen: _Seen) -> str:
    """E.g. 'entry 7 (promotion at 2026-..., by alice) on line 7', saying so when the seq field reads otherwise."""
    said = f" (its seq field reads {seen.entry.seq})" if seen.entry.seq != seen.seq else ""
    return f"entry {seen.seq} {_about(seen.entry)} on line {seen.line}{said}"


def _about(e: Entry) -> str:
    return f"({_short(e.kind, 40)} at {_short(e.time, 40)}, by {_short(e.actor, 60)})"


def _short(value: object, limit: int = 80) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _default_actor() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
