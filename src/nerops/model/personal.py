"""Personal data and the model: what of the training text must never reach a model file, and a check.

Resume text is personal data. A model trained on it must not carry the training set's e-mail
addresses, phone numbers, URLs or names in any file (the spaCy string store, the CRF's feature
strings, the gazetteer), because model files travel: to MLflow, to every serving copy, to cloud
storage. Hashing would not help: a salt shipped in the same artifact does not stop a dictionary
attack. What training does instead (see :func:`nerops.model.features.doc_features`):

- e-mail-, phone- and URL-shaped tokens (found by the patterns below, at training and at
  prediction alike) are described by their shape and kind only (``lower=<email>``);
- a word seen inside a ``Name`` span keeps its word features only when it is common outside Name
  spans in the training set (:data:`COMMON_MIN_COUNT` times in :data:`COMMON_MIN_DOCS` CVs: "will",
  "king", "west"); the others (:func:`hidden_words`) lose their word, affix and bigram features
  wherever they occur, and a bigram inside a name is never kept;
- gazetteers hold no personal label and no phrase with a hidden word or a shaped token;
- the saved pipeline's string store is a fresh one, holding none of the training text.

:class:`PersonalStrings` lists what must not appear; :func:`audit_folder` scans every file of a
model for it and reports counts only, never the strings (``nerops audit-artifacts``, and the gate).
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spacy.tokens import Doc, Token

    from nerops.data import Document

NAME_LABEL = "Name"
PERSONAL_LABELS = frozenset({NAME_LABEL, "Email Address", "Phone"})
"""Labels whose texts are personal: never in a gazetteer."""

COMMON_MIN_COUNT = 5
COMMON_MIN_DOCS = 3

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+(?<![.-])")
PHONE = re.compile(r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w])")
_TLDS = "com|org|net|edu|gov|io|co|in|uk|us|me|info|biz|ly|ai|dev|app|de|fr|ca|au|eu"
URL = re.compile(
    r"(?i)(?:\b[a-z][a-z0-9+.-]*://|\bwww\.)[^\s<>\"']+"  # with a scheme or www.
    rf"|\b(?:[a-z0-9-]{{2,}}\.)+(?:{_TLDS})/[^\s<>\"']+"  # a domain with a path: linkedin.com/in/someone
)
_KINDS = (("email", EMAIL), ("url", URL), ("phone", PHONE))


def shaped_kinds(doc: Doc, tokens: Sequence[Token]) -> list[str | None]:
    """Per token: ``"email"``, ``"url"`` or ``"phone"`` when it overlaps such a pattern in the text."""
    marks: list[tuple[int, int, str]] = []
    for kind, pattern in _KINDS:
        marks += [(m.start(), m.end(), kind) for m in pattern.finditer(doc.text)]
    if not marks:
        return [None] * len(tokens)
    out: list[str | None] = []
    for token in tokens:
        start, end = token.idx, token.idx + len(token)
        out.append(next((kind for s, e, kind in marks if s < end and start < e), None))
    return out


def name_spans(doc: Doc, document: Document) -> list:
    """The document's Name spans on ``doc``'s tokens, widened to whole tokens.

    Widened, not dropped: a name glued to the next word ("DenesikPhone") is a name word too.
    """
    spans = (
        doc.char_span(span.start, span.end, label=NAME_LABEL, alignment_mode="expand")
        for span in document.spans
        if span.label == NAME_LABEL
    )
    return [span for span in spans if span is not None]


def name_token_ids(spans: Iterable) -> frozenset[int]:
    """Token indices inside the ``Name`` spans among ``spans`` (spaCy spans)."""
    return frozenset(token.i for span in spans if span.label_ == NAME_LABEL for token in span)


def hidden_words(aligned: Sequence[tuple[Doc, Sequence]]) -> frozenset[str]:
    """Lower-cased words seen inside Name spans that are not common outside them."""
    inside: set[str] = set()
    outside: Counter[str] = Counter()
    outside_docs: dict[str, set[int]] = defaultdict(set)
    for number, (doc, spans) in enumerate(aligned):
        names = name_token_ids(spans)
        for token in doc:
            if token.is_space or token.is_punct:
                continue
            if token.i in names:
                inside.add(token.lower_)
            else:
                outside[token.lower_] += 1
                outside_docs[token.lower_].add(number)
    return frozenset(
        word for word in inside if outside[word] < COMMON_MIN_COUNT or len(outside_docs[word]) < COMMON_MIN_DOCS
    )


@dataclass(frozen=True)
class PersonalStrings:
    """The training set's personal strings, lower-cased: what no model file may contain."""

    emails: frozenset[str]
    phones: frozenset[str]
    urls: frozenset[str]
    names: frozenset[str]
    """Whole names, words joined by one space."""
    name_pairs: frozenset[tuple[str, str]]
    """Consecutive words of a name."""
    name_words: frozenset[str]
    """Words of names that are not common outside names (:func:`hidden_words`)."""

    @classmethod
    def from_documents(cls, docs: Sequence[Document]) -> PersonalStrings:
        from nerops.model.tokenizer import blank_pipeline

        nlp = blank_pipeline()
        aligned = []
        emails, phones, urls, names, pairs = set(), set(), set(), set(), set()
        for document in docs:
            doc = nlp.make_doc(document.text)
            emails.update(document.text[s.start : s.end].lower() for s in document.spans if s.label == "Email Address")
            spans = name_spans(doc, document)
            for span in spans:
                words = [t.lower_ for t in span if not (t.is_space or t.is_punct)]
                names.add(" ".join(words))
                pairs.update(zip(words, words[1:], strict=False))
            emails.update(m.group().lower() for m in EMAIL.finditer(document.text))
            phones.update(m.group().lower() for m in PHONE.finditer(document.text))
            urls.update(m.group().lower() for m in URL.finditer(document.text))
            aligned.append((doc, spans))
        return cls(
            frozenset(emails),
            frozenset(phones),
            frozenset(urls),
            frozenset(name for name in names if name),
            frozenset(pairs),
            hidden_words(aligned),
        )

    def sizes(self) -> dict[str, int]:
        return {
            "emails": len(self.emails),
            "phones": len(self.phones),
            "urls": len(self.urls),
            "names": len(self.names),
            "name_pairs": len(self.name_pairs),
            "name_words": len(self.name_words),
        }


@dataclass(frozen=True)
class AuditReport:
    """What an artifact scan found: counts of distinct personal strings, per kind and per file."""

    folder: str
    files: int
    searched: dict[str, int]
    found: dict[str, int]
    per_file: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not any(self.found.values())

    @property
    def total(self) -> int:
        return sum(self.found.values())

    def as_dict(self) -> dict[str, object]:
        return {
            "ok": self.ok,
            "folder": self.folder,
            "files": self.files,
            "searched": self.searched,
            "found": self.found,
            "per_file": self.per_file,
        }

    def describe(self) -> str:
        if self.ok:
            return f"no personal string of the training set in {self.files} model files"
        kinds = ", ".join(f"{count} {kind}" for kind, count in self.found.items() if count)
        where = ", ".join(sorted(self.per_file))
        return f"{self.total} personal strings of the training set in the model files ({kinds}) in: {where}"


_WORD = re.compile(r"[^\W_]+(?:['’-][^\W_]+)*")
_RUN = re.compile(r"[^\W_]+")
_PAIR_SEPARATORS = frozenset(" |_:+-")


def _words_and_pairs(text: str) -> tuple[set[str], set[tuple[str, str]]]:
    """The words of ``text`` (alphanumeric runs, and runs joined by ``'`` or ``-``) and consecutive pairs."""
    runs = list(_RUN.finditer(text))
    words = {m.group() for m in runs} | set(_WORD.findall(text))
    pairs = {
        (a.group(), b.group())
        for a, b in zip(runs, runs[1:], strict=False)
        if b.start() - a.end() == 1 and text[a.end()] in _PAIR_SEPARATORS
    }
    return words, pairs


def _file_text(path: Path) -> str:
    """A file's text for the scan, lower-cased.

    JSON and msgpack files are read as the strings they hold, a CRFsuite model as its labels and
    feature strings (its weights are floats whose bytes would spell random short words); any
    other file as its bytes decoded as UTF-8.
    """
    raw = path.read_bytes()
    if path.suffix == ".crfsuite":
        return _crfsuite_strings(path).lower()
    if path.suffix == ".json":
        try:
            return "\n".join(_strings(json.loads(raw))).lower()
        except (ValueError, UnicodeDecodeError):
            pass
    try:
        return raw.decode("utf-8").lower()
    except UnicodeDecodeError:
        pass
    try:
        import srsly

        return "\n".join(_strings(srsly.msgpack_loads(raw))).lower()
    except Exception:  # not msgpack either: scan the bytes as they are
        return raw.decode("utf-8", errors="replace").lower()


def _crfsuite_strings(path: Path) -> str:
    import pycrfsuite

    tagger = pycrfsuite.Tagger()
    tagger.open(str(path))
    try:
        info = tagger.info()
    finally:
        tagger.close()
    return "\n".join([*info.labels, *info.attributes])


def _strings(value: object) -> Iterator[str]:
    if isinstance(value, bytes):
        yield value.decode("utf-8", errors="replace")
    elif isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(key)
            yield from _strings(item)
    elif isinstance(value, list | tuple):
        for item in value:
            yield from _strings(item)


def _scan(text: str, personal: PersonalStrings, exempt: frozenset[str]) -> dict[str, set[object]]:
    """The personal strings found in ``text``, per kind (kept in memory only, never reported)."""
    words, pairs = _words_and_pairs(text)
    return {
        "emails": {s for s in personal.emails if s in text},
        "phones": {s for s in personal.phones if s in text},
        "urls": {s for s in personal.urls if s in text},
        "names": {s for s in personal.names if " " in s and s in text},
        "name_pairs": set(personal.name_pairs & pairs),
        "name_words": set(personal.name_words & words) - exempt,
    }


@lru_cache(maxsize=1)
def library_words() -> frozenset[str]:
    """Words in the files of a blank pipeline: spaCy's own defaults (``Conn.``, ``daren't``), not training text."""
    from nerops.model.tokenizer import blank_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        blank_pipeline().to_disk(tmp)
        words: set[str] = set()
        for path in Path(tmp).rglob("*"):
            if path.is_file():
                words |= _words_and_pairs(_file_text(path))[0]
    return frozenset(words)


def audit_folder(folder: Path, personal: PersonalStrings) -> AuditReport:
    """Scan every file under ``folder`` for ``personal``; counts only, never the strings."""
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    distinct: dict[str, set[object]] = defaultdict(set)
    per_file: dict[str, dict[str, int]] = {}
    for path in files:
        found = _scan(_file_text(path), personal, library_words())
        if any(found.values()):
            per_file[str(path.relative_to(folder))] = {kind: len(hits) for kind, hits in found.items() if hits}
        for kind, hits in found.items():
            distinct[kind] |= hits
    counts = {kind: len(distinct[kind]) for kind in personal.sizes()}
    return AuditReport(str(folder), len(files), personal.sizes(), counts, per_file)
