"""spaCy pipeline parts: the tokenizer tweaks, the CRF entity recognizer and the contact rules.

Importing this module registers the factories ``nerops_crf_ner`` and ``nerops_contact_rules``;
:func:`nerops.model.pipeline.load_pipeline` imports it before ``spacy.load``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pycrfsuite
import spacy
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from nerops.model.features import content_tokens, doc_features

PHONE_LABEL = "Phone"
EMAIL_LABEL = "Email Address"

_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)+(?<![.-])")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+\d{1,3}[\s.-]?)?(?:\(\d{2,4}\)\s?|\d{2,4}[\s.-])\d{3,4}[\s.-]?\d{3,4}(?![\w])"
)
_EXTRA_INFIXES = (r"[/|•·]", r"(?<=[\w)]),(?=\S)", r"(?<=\w)[()](?=\w)")


def blank_pipeline() -> Language:
    """An English blank pipeline whose tokenizer also splits on ``/``, ``|``, bullets and tight commas."""
    nlp = spacy.blank("en")
    infixes = list(nlp.Defaults.infixes) + list(_EXTRA_INFIXES)
    nlp.tokenizer.infix_finditer = spacy.util.compile_infix_regex(infixes).finditer
    return nlp


def bio_tags(doc: Doc, spans: list[Span]) -> list[str]:
    """BIO tags for the content tokens of ``doc`` given aligned entity spans."""
    tag_of = {}
    for span in spans:
        for k, token in enumerate(t for t in span if not t.is_space):
            tag_of[token.i] = ("B-" if k == 0 else "I-") + span.label_
    return [tag_of.get(token.i, "O") for token in content_tokens(doc)]


def spans_from_tags(doc: Doc, tags: list[str]) -> list[Span]:
    """Entity spans from BIO tags over the content tokens (an ``I-`` after ``O`` starts one)."""
    tokens = content_tokens(doc)
    spans: list[Span] = []
    start = label = None
    last = None
    for token, tag in zip(tokens, tags, strict=True):
        kind, _, tag_label = tag.partition("-")
        if label is not None and (kind in ("B", "O") or tag_label != label):
            spans.append(Span(doc, start, last + 1, label=label))
            label = None
        if kind in ("B", "I") and label is None:
            start, label = token.i, tag_label
        last = token.i
    if label is not None:
        spans.append(Span(doc, start, last + 1, label=label))
    return spans


class CRFEntityRecognizer:
    """Tags content tokens with a linear-chain CRF (python-crfsuite) and sets ``doc.ents``."""

    def __init__(self, nlp: Language, name: str, window: int) -> None:
        self.name = name
        self.window = window
        self._tagger: pycrfsuite.Tagger | None = None
        self._model_path: Path | None = None

    def __call__(self, doc: Doc) -> Doc:
        if self._tagger is None:
            raise RuntimeError(f"{self.name}: no CRF model loaded (train it or load a saved pipeline)")
        if not len(doc):
            return doc
        tags = self._tagger.tag(doc_features(doc, self.window))
        doc.ents = filter_spans(spans_from_tags(doc, tags))
        return doc

    def set_model(self, model_path: Path) -> None:
        tagger = pycrfsuite.Tagger()
        tagger.open(str(model_path))
        self._tagger, self._model_path = tagger, model_path

    @property
    def labels(self) -> tuple[str, ...]:
        if self._tagger is None:
            return ()
        return tuple(sorted({tag[2:] for tag in self._tagger.labels() if tag != "O"}))

    def to_disk(self, path: Path, *, exclude=()) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self._model_path is None:
            raise RuntimeError(f"{self.name}: nothing to save, the CRF is not trained")
        (path / "model.crfsuite").write_bytes(self._model_path.read_bytes())
        (path / "cfg.json").write_text(json.dumps({"window": self.window}))

    def from_disk(self, path: Path, *, exclude=()) -> CRFEntityRecognizer:
        self.set_model(Path(path) / "model.crfsuite")
        return self


@Language.factory("nerops_crf_ner", default_config={"window": 2})
def make_crf_ner(nlp: Language, name: str, window: int) -> CRFEntityRecognizer:
    return CRFEntityRecognizer(nlp, name, window)


@Language.component("nerops_contact_rules")
def contact_rules(doc: Doc) -> Doc:
    """E-mail and phone by pattern: an e-mail replaces what overlaps it; a phone only fills gaps."""
    emails = _matches(doc, _EMAIL, EMAIL_LABEL)
    phones = _matches(doc, _PHONE, PHONE_LABEL)
    kept = [ent for ent in doc.ents if ent.label_ != EMAIL_LABEL and not _overlaps(ent, emails)]
    kept += emails
    kept += [phone for phone in phones if not _overlaps(phone, kept)]
    doc.ents = filter_spans(kept)
    return doc


def _matches(doc: Doc, pattern: re.Pattern[str], label: str) -> list[Span]:
    spans = []
    for match in pattern.finditer(doc.text):
        span = doc.char_span(match.start(), match.end(), label=label, alignment_mode="expand")
        if span is not None:
            spans.append(span)
    return filter_spans(spans)


def _overlaps(span: Span, others: list[Span]) -> bool:
    return any(span.start < other.end and other.start < span.end for other in others)
