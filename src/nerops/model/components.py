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

from nerops.model.features import Gazetteer, content_tokens, doc_features

GAZETTEER_FILE = "gazetteer.json"
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


def bio_tags(doc: Doc, spans: list[Span], scheme: str = "bio") -> list[str]:
    """Tags for the content tokens of ``doc`` given aligned entity spans.

    ``scheme`` is ``"bio"`` (``B-`` first token, ``I-`` the others) or ``"bilou"`` (also ``L-``
    for the last token of a longer entity and ``U-`` for a one-token entity).
    """
    if scheme not in ("bio", "bilou"):
        raise ValueError(f"unknown tag scheme {scheme!r}")
    tag_of = {}
    for span in spans:
        tokens = [t for t in span if not t.is_space]
        for k, token in enumerate(tokens):
            if scheme == "bio" or 0 < k < len(tokens) - 1:
                prefix = "B-" if k == 0 else "I-"
            elif len(tokens) == 1:
                prefix = "U-"
            else:
                prefix = "B-" if k == 0 else "L-"
            tag_of[token.i] = prefix + span.label_
    return [tag_of.get(token.i, "O") for token in content_tokens(doc)]


def spans_from_tags(doc: Doc, tags: list[str]) -> list[Span]:
    """Entity spans from BIO or BILOU tags over the content tokens.

    An ``I-`` or ``L-`` after ``O`` (or after another label) starts an entity; ``L-`` and ``U-``
    end one, ``B-``, ``U-`` and ``O`` end the one before.
    """
    tokens = content_tokens(doc)
    spans: list[Span] = []
    start = label = None
    last = None
    for token, tag in zip(tokens, tags, strict=True):
        kind, _, tag_label = tag.partition("-")
        if label is not None and (kind in ("B", "U", "O") or tag_label != label):
            spans.append(Span(doc, start, last + 1, label=label))
            label = None
        if kind in ("B", "I", "L", "U") and label is None:
            start, label = token.i, tag_label
        last = token.i
        if kind in ("L", "U") and label is not None:
            spans.append(Span(doc, start, last + 1, label=label))
            label = None
    if label is not None:
        spans.append(Span(doc, start, last + 1, label=label))
    return spans


class CRFEntityRecognizer:
    """Tags content tokens with a linear-chain CRF (python-crfsuite) and sets ``doc.ents``.

    With ``gazetteer`` on, the component holds the training data's :class:`Gazetteer` (saved
    next to the CRF model); with ``line_features`` on, the CRF also sees the line layout.
    """

    def __init__(self, nlp: Language, name: str, window: int, line_features: bool, gazetteer: bool) -> None:
        self.name = name
        self.window = window
        self.line_features = line_features
        self.use_gazetteer = gazetteer
        self.gazetteer: Gazetteer | None = None
        self._tagger: pycrfsuite.Tagger | None = None
        self._model_path: Path | None = None

    def __call__(self, doc: Doc) -> Doc:
        if self._tagger is None:
            raise RuntimeError(f"{self.name}: no CRF model loaded (train it or load a saved pipeline)")
        if self.use_gazetteer and self.gazetteer is None:
            raise RuntimeError(f"{self.name}: the gazetteer is on but none is loaded")
        if not len(doc):
            return doc
        tags = self._tagger.tag(self.features(doc))
        doc.ents = filter_spans(spans_from_tags(doc, tags))
        return doc

    def features(self, doc: Doc) -> list[list[str]]:
        """The CRF features of ``doc`` with this component's settings and gazetteer."""
        gazetteer = self.gazetteer if self.use_gazetteer else None
        return doc_features(doc, self.window, gazetteer=gazetteer, line_features=self.line_features)

    def set_gazetteer(self, gazetteer: Gazetteer) -> None:
        self.gazetteer = gazetteer

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
        if self.use_gazetteer and self.gazetteer is None:
            raise RuntimeError(f"{self.name}: nothing to save, the gazetteer is on but not built")
        (path / "model.crfsuite").write_bytes(self._model_path.read_bytes())
        cfg = {"window": self.window, "line_features": self.line_features, "gazetteer": self.use_gazetteer}
        (path / "cfg.json").write_text(json.dumps(cfg))
        if self.use_gazetteer and self.gazetteer is not None:
            (path / GAZETTEER_FILE).write_text(json.dumps(self.gazetteer.to_dict(), ensure_ascii=False))

    def from_disk(self, path: Path, *, exclude=()) -> CRFEntityRecognizer:
        path = Path(path)
        self.set_model(path / "model.crfsuite")
        if self.use_gazetteer:
            self.gazetteer = Gazetteer.from_dict(json.loads((path / GAZETTEER_FILE).read_text()))
        return self


@Language.factory("nerops_crf_ner", default_config={"window": 2, "line_features": False, "gazetteer": False})
def make_crf_ner(nlp: Language, name: str, window: int, line_features: bool, gazetteer: bool) -> CRFEntityRecognizer:
    return CRFEntityRecognizer(nlp, name, window, line_features, gazetteer)


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
