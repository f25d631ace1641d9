"""spaCy pipeline parts: the tokenizer tweaks, the CRF entity recognizer and the contact rules.

Importing this module registers the factories ``nerops_crf_ner`` and ``nerops_contact_rules``;
:func:`nerops.model.pipeline.load_pipeline` imports it before ``spacy.load``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pycrfsuite
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from nerops.model.features import Gazetteer, content_tokens, doc_features
from nerops.model.personal import EMAIL, PHONE
from nerops.model.tokenizer import blank_pipeline

__all__ = ["blank_pipeline"]  # where callers have always found it

GAZETTEER_FILE = "gazetteer.json"
PHONE_LABEL = "Phone"
EMAIL_LABEL = "Email Address"


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


class PosteriorDecoder:
    """Best valid tag sequence under the CRF's per-token marginals, with the ``O`` tag penalised.

    The score of a sequence is the sum of its tags' log marginal probabilities, minus
    ``o_penalty`` for every ``O``; only valid sequences are considered: ``I-X`` (and in BILOU
    ``L-X``) only after ``B-X`` or ``I-X``, and in BILOU nothing else after ``B-`` or ``I-``.
    A penalty above zero trades precision for recall. Tokens whose ``O`` marginal is above
    :attr:`CERTAIN` are fixed to ``O`` (and split the sequence), which saves most of the work.
    """

    CERTAIN = 0.99

    def __init__(self, labels: list[str], o_penalty: float) -> None:
        self.labels = labels
        bilou = any(label[:2] in ("L-", "U-") for label in labels)
        inside = np.array([label[:2] in ("B-", "I-") for label in labels])
        continues = np.array([label[:2] in (("I-", "L-") if bilou else ("I-",)) for label in labels])
        same = np.array([[a[2:] == b[2:] for b in labels] for a in labels])
        # in BILOU an entity must be closed (L-) before anything else; in BIO it just stops
        opens = inside if bilou else np.zeros(len(labels), dtype=bool)
        allowed = np.where(continues[None, :], inside[:, None] & same, ~opens[:, None])
        self._transitions = np.where(allowed, 0.0, -np.inf)
        self._start = np.where(continues, -np.inf, 0.0)
        self._end = np.where(opens, -np.inf, 0.0)
        self._bias = np.array([-o_penalty if label == "O" else 0.0 for label in labels])

    def __call__(self, tagger: pycrfsuite.Tagger, features: list[list[str]]) -> list[str]:
        tagger.set(features)
        n = len(features)
        p_outside = [tagger.marginal("O", t) for t in range(n)]
        tags = ["O"] * n
        t = 0
        while t < n:
            if p_outside[t] > self.CERTAIN:
                t += 1
                continue
            start = t
            while t < n and p_outside[t] <= self.CERTAIN:
                t += 1
            tags[start:t] = self._viterbi(tagger, start, t)
        return tags

    def _viterbi(self, tagger: pycrfsuite.Tagger, start: int, end: int) -> list[str]:
        """Best tags for positions ``start:end``, with ``O`` (or the sequence edge) on both sides."""
        marginal = tagger.marginal
        probabilities = np.array([[marginal(label, t) for label in self.labels] for t in range(start, end)])
        emissions = np.log(np.maximum(probabilities, 1e-12)) + self._bias
        n, size = emissions.shape
        columns = np.arange(size)
        back = np.zeros((n, size), dtype=np.intp)
        score = emissions[0] + self._start
        for t in range(1, n):
            candidates = score[:, None] + self._transitions
            back[t] = candidates.argmax(axis=0)
            score = candidates[back[t], columns] + emissions[t]
        best = [int(np.argmax(score + self._end))]
        for t in range(n - 1, 0, -1):
            best.append(int(back[t, best[-1]]))
        return [self.labels[i] for i in reversed(best)]


def propagate_entities(doc: Doc, labels: Sequence[str]) -> list[Span]:
    """``doc.ents`` plus every other occurrence, as whole words, of an entity text of one of ``labels``.

    In the resume data a person's name is labelled wherever it occurs (the anonymised name
    also replaces referees' names), so one found occurrence gives the others.
    """
    ents = list(doc.ents)
    wanted = {ent.text: ent.label_ for ent in ents if ent.label_ in labels}
    taken = [(ent.start, ent.end) for ent in ents]
    for text, label in wanted.items():
        for match in re.finditer(rf"(?<!\w){re.escape(text)}(?!\w)", doc.text):
            span = doc.char_span(match.start(), match.end(), label=label)
            if span is not None and not any(span.start < end and start < span.end for start, end in taken):
                ents.append(span)
                taken.append((span.start, span.end))
    return ents


class CRFEntityRecognizer:
    """Tags content tokens with a linear-chain CRF (python-crfsuite) and sets ``doc.ents``.

    With ``gazetteer`` on, the component holds the training data's :class:`Gazetteer` (saved
    next to the CRF model); with ``line_features`` on, the CRF also sees the line layout. With
    ``o_penalty`` 0 it tags with the CRF's Viterbi path, above 0 with a :class:`PosteriorDecoder`.
    Entities of the ``propagate`` labels are then copied to the other occurrences of their text.
    """

    def __init__(
        self,
        nlp: Language,
        name: str,
        window: int,
        line_features: bool,
        gazetteer: bool,
        o_penalty: float,
        propagate: list[str],
    ) -> None:
        self.name = name
        self.window = window
        self.line_features = line_features
        self.use_gazetteer = gazetteer
        self.o_penalty = o_penalty
        self.propagate = list(propagate)
        self.gazetteer: Gazetteer | None = None
        self._tagger: pycrfsuite.Tagger | None = None
        self._decoder: PosteriorDecoder | None = None
        self._model_path: Path | None = None

    def __call__(self, doc: Doc) -> Doc:
        if self._tagger is None:
            raise RuntimeError(f"{self.name}: no CRF model loaded (train it or load a saved pipeline)")
        if self.use_gazetteer and self.gazetteer is None:
            raise RuntimeError(f"{self.name}: the gazetteer is on but none is loaded")
        if not len(doc):
            return doc
        features = self.features(doc)
        if not features:
            return doc
        tags = self._decoder(self._tagger, features) if self._decoder else self._tagger.tag(features)
        doc.ents = filter_spans(spans_from_tags(doc, tags))
        if self.propagate:
            doc.ents = filter_spans(propagate_entities(doc, self.propagate))
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
        labels = tagger.labels()
        self._decoder = PosteriorDecoder(labels, self.o_penalty) if self.o_penalty > 0 and "O" in labels else None

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
        cfg = {
            "window": self.window,
            "line_features": self.line_features,
            "gazetteer": self.use_gazetteer,
            "o_penalty": self.o_penalty,
            "propagate": self.propagate,
        }
        (path / "cfg.json").write_text(json.dumps(cfg))
        if self.use_gazetteer and self.gazetteer is not None:
            (path / GAZETTEER_FILE).write_text(json.dumps(self.gazetteer.to_dict(), ensure_ascii=False))

    def from_disk(self, path: Path, *, exclude=()) -> CRFEntityRecognizer:
        path = Path(path)
        self.set_model(path / "model.crfsuite")
        if self.use_gazetteer:
            self.gazetteer = Gazetteer.from_dict(json.loads((path / GAZETTEER_FILE).read_text()))
        return self


@Language.factory(
    "nerops_crf_ner",
    default_config={"window": 2, "line_features": False, "gazetteer": False, "o_penalty": 0.0, "propagate": []},
)
def make_crf_ner(
    nlp: Language,
    name: str,
    window: int,
    line_features: bool,
    gazetteer: bool,
    o_penalty: float,
    propagate: list[str],
) -> CRFEntityRecognizer:
    return CRFEntityRecognizer(nlp, name, window, line_features, gazetteer, o_penalty, propagate)


@Language.component("nerops_contact_rules")
def contact_rules(doc: Doc) -> Doc:
    """E-mail and phone by pattern: an e-mail replaces what overlaps it; a phone only fills gaps."""
    emails = _matches(doc, EMAIL, EMAIL_LABEL)
    phones = _matches(doc, PHONE, PHONE_LABEL)
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
