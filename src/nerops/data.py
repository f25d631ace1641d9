"""The dotin resume data: fetch the pinned zips, read the XML inside, fix the known quirks.

A CV is ``<cv>…text…<label type="Name">Virgilio Rice</label>…</cv>``. The loader turns each
file into a :class:`Document` (plain text plus character spans) and counts every repair it
makes in a :class:`LoadReport`, so nothing is changed or dropped silently:

- literal Python escapes in the text (``\\xe2\\x80\\xa2`` for ``•``, ``\\'``, ``\\t``) are decoded
  before offsets are computed, and spans are moved with the text;
- the stray ``"`` around every CV and the outer whitespace are removed;
- spans are stripped of leading and trailing whitespace; spans left empty are dropped.

Resume text is personal data: a Document's ``repr`` leaves the text out and no message here
quotes it.
"""

from __future__ import annotations

import hashlib
import re
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from xml.etree import ElementTree

from nerops.errors import ChecksumError, DataError

PREPROCESS_VERSION = "1"

LABELS: tuple[str, ...] = (
    "Name",
    "Email Address",
    "Location",
    "Designation",
    "Companies worked at",
    "Years of Experience",
    "College Name",
    "Degree",
    "Graduation Year",
    "Tech Tools",
    "Job Specific Skills",
    "Soft Skills",
)


@dataclass(frozen=True)
class PinnedFile:
    """One zip of the dataset, as published at the pinned commit."""

    remote_name: str
    local_name: str
    sha256: str


TRAIN_ZIP = PinnedFile(
    "545_cvs_train_v2.zip",
    "dotin_545_cvs_train_v2.zip",
    "88d24575216f44cddef5b15ecbfabe320905d1c2b175fbd14b570c378e8e00ec",
)
TEST_ZIP = PinnedFile(
    "set_aside_test_v2_50cvs.zip",
    "dotin_set_aside_test_v2_50cvs.zip",
    "afa87cecf256ef8d4323444f3161364ea602893f6acd74a47285feda6b305890",
)


@dataclass(frozen=True, order=True)
class Span:
    start: int
    end: int
    label: str


@dataclass(frozen=True)
class Document:
    """One CV: its name (file inside the zip), text and gold spans. The repr omits the text."""

    name: str
    text: str = field(repr=False)
    spans: tuple[Span, ...] = ()


@dataclass
class LoadReport:
    """What the loader read, repaired and dropped, as counts (no text)."""

    files: int = 0
    documents: int = 0
    spans: int = 0
    skipped_files: list[str] = field(default_factory=list)
    docs_with_escapes: int = 0
    escapes_decoded: int = 0
    spans_trimmed: int = 0
    spans_dropped_empty: int = 0
    spans_per_label: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, object]:
        return {
            "files": self.files,
            "documents": self.documents,
            "spans": self.spans,
            "skipped_files": self.skipped_files,
            "docs_with_escapes": self.docs_with_escapes,
            "escapes_decoded": self.escapes_decoded,
            "spans_trimmed": self.spans_trimmed,
            "spans_dropped_empty": self.spans_dropped_empty,
            "spans_per_label": dict(sorted(self.spans_per_label.items())),
        }


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_pinned(pinned: PinnedFile, *, local_dir: Path | None, cache_dir: Path, base_url: str) -> Path:
    """Return a verified path to ``pinned``: from ``local_dir`` if given, else the cache or the web."""
    if local_dir is not None:
        for candidate in (local_dir / pinned.local_name, local_dir / pinned.remote_name):
            if candidate.is_file():
                return _verified(candidate, pinned)
        raise DataError(local_dir / pinned.local_name, "no such file (NEROPS_DATA_DIR points here)")
    cached = cache_dir / pinned.local_name
    if cached.is_file():
        return _verified(cached, pinned)
    cache_dir.mkdir(parents=True, exist_ok=True)
    url = f"{base_url.rstrip('/')}/{pinned.remote_name}"
    partial = cached.with_suffix(".part")
    try:
        with urllib.request.urlopen(url, timeout=60) as response, partial.open("wb") as out:
            out.write(response.read())
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise DataError(url, f"download failed ({exc}); set NEROPS_DATA_DIR to a folder holding the zips") from exc
    try:
        _verified(partial, pinned)
    except ChecksumError as exc:
        partial.unlink(missing_ok=True)
        raise ChecksumError(url, exc.problem) from exc
    partial.replace(cached)
    return cached


def _verified(path: Path, pinned: PinnedFile) -> Path:
    actual = sha256_file(path)
    if actual != pinned.sha256:
        raise ChecksumError(path, f"sha256 is {actual}, expected {pinned.sha256}")
    return path


def read_corpus(path: Path, report: LoadReport | None = None) -> list[Document]:
    """Read every ``*.xml`` CV of a zip or a folder, in name order."""
    report = report if report is not None else LoadReport()
    docs = []
    for name, location, raw in _xml_members(path, report):
        report.files += 1
        try:
            doc = parse_cv(name, raw, report)
        except DataError as exc:
            raise DataError(location, exc.problem) from exc
        report.documents += 1
        report.spans += len(doc.spans)
        report.spans_per_label.update(span.label for span in doc.spans)
        docs.append(doc)
    return docs


def _xml_members(path: Path, report: LoadReport):
    if not path.exists():
        raise DataError(path, "no such file or folder")
    if path.is_dir():
        for file in sorted(path.rglob("*.xml")):
            yield f"{path.name}/{file.relative_to(path)}", file, file.read_bytes()
        return
    try:
        with zipfile.ZipFile(path) as archive:
            names = sorted(archive.namelist())
            for name in names:
                if not name.endswith(".xml"):
                    continue
                if "__MACOSX" in name or Path(name).name.startswith("._"):
                    report.skipped_files.append(name)
                    continue
                try:
                    data = archive.read(name)
                except (zipfile.BadZipFile, OSError) as exc:
                    raise DataError(f"{path}!{name}", f"corrupt zip member ({exc})") from exc
                yield f"{path.name}!{name}", f"{path}!{name}", data
    except zipfile.BadZipFile as exc:
        raise DataError(path, f"not a readable zip file ({exc})") from exc


# --- one CV -------------------------------------------------------------------------------

_ESCAPE = re.compile(r"(?:\\x[0-9a-fA-F]{2})+|\\['\"\\tnr]")
_SIMPLE_ESCAPES = {"\\'": "'", '\\"': '"', "\\\\": "\\", "\\t": " ", "\\n": " ", "\\r": " "}


def parse_cv(name: str, raw: bytes, report: LoadReport | None = None) -> Document:
    """Parse one CV's XML into a Document, repairing the dataset's quirks."""
    report = report if report is not None else LoadReport()
    try:
        root = ElementTree.fromstring(raw)
    except ElementTree.ParseError as exc:
        raise DataError(name, f"XML does not parse ({exc})") from exc
    pieces: list[str] = []
    spans: list[Span] = []
    _flatten(name, root, pieces, spans)
    text = "".join(pieces)

    edits = [(m.start(), m.end(), _decode_escape(m.group())) for m in _ESCAPE.finditer(text)]
    if edits:
        report.docs_with_escapes += 1
        report.escapes_decoded += len(edits)
    text, spans = _apply_edits(text, spans, edits)
    text, spans = _apply_edits(text, spans, _outer_trim_edits(text))

    kept = []
    for span in spans:
        start, end = span.start, span.end
        while start < end and text[start].isspace():
            start += 1
        while end > start and text[end - 1].isspace():
            end -= 1
        if start == end:
            report.spans_dropped_empty += 1
            continue
        if (start, end) != (span.start, span.end):
            report.spans_trimmed += 1
        kept.append(Span(start, end, span.label))
    return build_document(name, text, kept)


def build_document(name: str, text: str, spans: list[Span] | tuple[Span, ...]) -> Document:
    """A Document, after checking that every span lies inside its text."""
    for span in spans:
        if not (0 <= span.start < span.end <= len(text)):
            raise DataError(
                name,
                f"span {span.start}-{span.end} ({span.label}) is outside the text (length {len(text)})",
            )
    return Document(name, text, tuple(sorted(spans)))


def _flatten(name: str, element: ElementTree.Element, pieces: list[str], spans: list[Span]) -> None:
    """Append an element's text to ``pieces``, recording a span for every ``<label>``."""
    pieces.append(element.text or "")
    for child in element:
        if child.tag != "label":
            raise DataError(name, f"unexpected element <{child.tag}> (only <label> is allowed)")
        label = child.get("type")
        if not label:
            raise DataError(name, "a <label> has no type attribute")
        start = sum(map(len, pieces))
        _flatten(name, child, pieces, spans)
        spans.append(Span(start, sum(map(len, pieces)), label))
        pieces.append(child.tail or "")


def _decode_escape(escape: str) -> str:
    if escape in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[escape]
    return bytes.fromhex(escape.replace("\\x", "")).decode("utf-8", errors="replace")


def _outer_trim_edits(text: str) -> list[tuple[int, int, str]]:
    """Edits that remove outer whitespace and the stray quotes the export left around each CV."""
    start, end = 0, len(text)
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if start < end and text[start] == '"':
        start += 1
    if end > start and text[end - 1] == '"':
        end -= 1
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return [(0, start, ""), (end, len(text), "")]


def _apply_edits(text: str, spans: list[Span], edits: list[tuple[int, int, str]]) -> tuple[str, list[Span]]:
    """Replace ``text[a:b]`` by ``s`` for every non-overlapping ``(a, b, s)`` and move the spans.

    A span edge inside a replaced region moves outward-in: a start goes to the region's end,
    an end to its start (so a span never gains a half-decoded character).
    """
    edits = [edit for edit in edits if edit[0] < edit[1]]
    if not edits:
        return text, spans
    out: list[str] = []
    regions: list[tuple[int, int, int, int]] = []  # old start, old end, new start, new end
    cursor = 0
    new_len = 0
    for start, end, replacement in edits:
        out.append(text[cursor:start])
        new_len += start - cursor
        out.append(replacement)
        regions.append((start, end, new_len, new_len + len(replacement)))
        new_len += len(replacement)
        cursor = end
    out.append(text[cursor:])

    def move(position: int, *, is_start: bool) -> int:
        shift = 0
        for old_start, old_end, new_start, new_end in regions:
            if position <= old_start:
                break
            if position < old_end:
                return new_end if is_start else new_start
            shift = new_end - old_end
        return position + shift

    moved = [Span(move(s.start, is_start=True), move(s.end, is_start=False), s.label) for s in spans]
    return "".join(out), [
        span if span.start <= span.end else Span(span.start, span.start, span.label) for span in moved
    ]
