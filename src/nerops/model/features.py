"""Token features for the CRF: word form, shape, affixes, line layout, CV section, context, gazetteer.

A CV's newlines were collapsed into double spaces, so a whitespace token marks a line break;
whitespace tokens are not tagged, they only feed the ``bol``/``eol`` features of their
neighbours. Features are strings (``"lower=java"``), as python-crfsuite takes them.

Two optional groups:

- line features: the layout of the line a token is on (length, case, years, end punctuation,
  the token's place in it, the length of the lines around it);
- gazetteer features: whether the token, or a phrase of up to :data:`MAX_PHRASE` tokens
  starting or going on at it, was an entity of label X in the training data, with how often
  that phrase was labelled X when it occurred (a bucket). A :class:`Gazetteer` is built from
  training documents; :func:`cross_gazetteers` gives each training document one built from the
  other folds only, so the CRF learns how far to trust the gazetteer on unseen text.
"""

from __future__ import annotations

import random
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from typing import Any

from spacy.tokens import Doc, Span, Token

from nerops.model.personal import PERSONAL_LABELS, shaped_kinds

SECTION_WORDS: dict[str, str] = {
    "education": "education",
    "academic": "education",
    "qualification": "education",
    "qualifications": "education",
    "experience": "experience",
    "employment": "experience",
    "work": "experience",
    "history": "experience",
    "skills": "skills",
    "skill": "skills",
    "technical": "skills",
    "technologies": "skills",
    "tools": "skills",
    "competencies": "skills",
    "expertise": "skills",
    "summary": "summary",
    "profile": "summary",
    "objective": "summary",
    "about": "summary",
    "projects": "projects",
    "project": "projects",
    "certifications": "certifications",
    "certification": "certifications",
    "awards": "awards",
    "achievements": "awards",
    "languages": "languages",
    "interests": "other",
    "hobbies": "other",
    "personal": "personal",
    "contact": "personal",
    "references": "other",
}

_YEAR = re.compile(r"^(19|20)\d\d$")
_DIGIT = re.compile(r"\d")
_RANGE_WORDS = frozenset({"-", "–", "—", "to", "till", "until"})

MAX_PHRASE = 6
"""Longest gazetteer phrase, in tokens."""


def content_tokens(doc: Doc) -> list[Token]:
    """The tokens the CRF tags: everything but whitespace."""
    return [token for token in doc if not token.is_space]


def doc_features(
    doc: Doc,
    window: int = 2,
    *,
    gazetteer: Gazetteer | None = None,
    line_features: bool = False,
    hidden: frozenset[str] = frozenset(),
    name_tokens: frozenset[int] = frozenset(),
) -> list[list[str]]:
    """One feature list per content token of ``doc``.

    Privacy (see :mod:`nerops.model.personal`): e-mail-, phone- and URL-shaped tokens are
    described by their kind (``lower=<email>``), never by their text. At training time,
    ``hidden`` words (names not common outside names) get no word, affix or bigram feature, and
    no bigram is formed inside ``name_tokens`` (the indices of tokens in Name spans).
    """
    tokens = content_tokens(doc)
    n = len(tokens)
    kinds = shaped_kinds(doc, tokens)
    words = [_word(token, kind, hidden) for token, kind in zip(tokens, kinds, strict=True)]
    base = [
        _token_features(doc, token, word, kind, hidden) for token, word, kind in zip(tokens, words, kinds, strict=True)
    ]
    shapes = [feats[0][6:] for feats in base]  # "shape=..." comes first
    bols = [feats[-1] for feats in base]
    in_name = [token.i in name_tokens for token in tokens] if name_tokens else [False] * n
    sections = _sections(doc, tokens)
    extra: list[list[str]] = [[] for _ in tokens]
    if gazetteer is not None:
        for feats, gazetteer_feats in zip(extra, gazetteer.features(tokens), strict=True):
            feats += gazetteer_feats
    if line_features:
        for feats, layout_feats in zip(extra, _line_features(doc, tokens), strict=True):
            feats += layout_feats
    out: list[list[str]] = []
    for i in range(n):
        feats = ["bias", *base[i], f"sec={sections[i]}", f"pos={_position_bucket(i, n)}", *extra[i]]
        for offset in range(-window, window + 1):
            if offset == 0:
                continue
            j = i + offset
            if 0 <= j < n:
                if words[j] is not None:
                    feats.append(f"{offset}:lower={words[j]}")
                feats += [f"{offset}:shape={shapes[j]}", f"{offset}:{bols[j]}"]
            else:
                feats.append(f"{offset}:pad")
        for j, name in ((i - 1, "bi-1"), (i + 1, "bi+1")):
            if 0 <= j < n and words[i] is not None and words[j] is not None and not (in_name[i] and in_name[j]):
                first, second = (words[j], words[i]) if j < i else (words[i], words[j])
                feats.append(f"{name}={first}|{second}")
        out.append(feats)
    return out


def _word(token: Token, kind: str | None, hidden: frozenset[str]) -> str | None:
    """What the features may say of a token's text: its lower case, its kind, or nothing."""
    if kind is not None:
        return f"<{kind}>"
    return None if token.lower_ in hidden else token.lower_


def _token_features(
    doc: Doc, token: Token, word: str | None, kind: str | None, hidden: frozenset[str] = frozenset()
) -> list[str]:
    text = token.text
    feats = [f"shape={token.shape_}", f"len={min(len(text), 12)}"]
    if word is not None:
        feats.append(f"lower={word}")
        if kind is None and not hidden:  # prediction: nothing is hidden
            feats += [f"pre3={word[:3]}", f"suf3={word[-3:]}", f"suf2={word[-2:]}"]
        elif kind is None:
            # an affix of another word can spell a short hidden name ("dan" in "dance"): left out too
            affixes = (("pre3", word[:3]), ("suf3", word[-3:]), ("suf2", word[-2:]))
            feats += [f"{name}={affix}" for name, affix in affixes if affix not in hidden]
    if token.is_title:
        feats.append("title")
    if token.is_upper:
        feats.append("upper")
    if token.is_digit:
        feats.append("digit")
    if token.like_num:
        feats.append("num")
    if token.like_email or kind == "email":
        feats.append("email")
    if token.like_url or kind == "url":
        feats.append("url")
    if kind == "phone":
        feats.append("phone")
    if token.is_punct:
        feats.append("punct")
    if _YEAR.match(text):
        feats.append("year")
    if token.i + 1 < len(doc) and doc[token.i + 1].is_space or token.i + 1 == len(doc):
        feats.append("eol")
    bol = token.i == 0 or doc[token.i - 1].is_space or "\n" in doc[token.i - 1].whitespace_
    feats.append("bol=1" if bol else "bol=0")  # kept last: the context features read it
    return feats


def _sections(doc: Doc, tokens: list[Token]) -> list[str]:
    """The CV section each token is in, from the last header-like line seen before it."""
    current = "top"
    out = []
    for index, token in enumerate(tokens):
        starts_line = token.i == 0 or doc[token.i - 1].is_space
        if starts_line:
            section = _header_section(tokens, index)
            if section:
                current = section
        out.append(current)
    return out


def _header_section(tokens: list[Token], index: int, max_words: int = 4) -> str | None:
    """If the line starting at ``tokens[index]`` looks like a section header, its section."""
    doc = tokens[index].doc
    words = []
    for token in tokens[index : index + max_words + 1]:
        if token is not tokens[index] and token.i > 0 and doc[token.i - 1].is_space:
            break
        words.append(token)
    if not words or len(words) > max_words:
        return None
    for token in words:
        section = SECTION_WORDS.get(token.lower_.strip(":"))
        if section:
            return section
    return None


def _position_bucket(index: int, n: int) -> str:
    if index < 10:
        return "first10"
    if index < 40:
        return "first40"
    return f"tenth{int(10 * index / max(n, 1))}"


# --- line layout ---------------------------------------------------------------------------


def _starts_line(doc: Doc, token: Token) -> bool:
    return token.i == 0 or doc[token.i - 1].is_space


def _length_bucket(n: int) -> str:
    if n <= 4:
        return str(n)
    if n <= 6:
        return "5-6"
    if n <= 10:
        return "7-10"
    return "11-20" if n <= 20 else "21+"


def _line_features(doc: Doc, tokens: list[Token]) -> list[list[str]]:
    """Features of each token's line: its shape and the token's place in it, and the lines around it."""
    lines: list[list[int]] = []
    for i, token in enumerate(tokens):
        if not lines or _starts_line(doc, token):
            lines.append([])
        lines[-1].append(i)
    described = [_describe_line([tokens[i] for i in line]) for line in lines]
    out: list[list[str]] = []
    for number, line in enumerate(lines):
        before = f"pll={_length_bucket(len(lines[number - 1]))}" if number else "pl=none"
        shared = [*described[number], before]
        if number + 1 < len(lines):
            shared.append(f"nll={_length_bucket(len(lines[number + 1]))}")
        if number < 3:
            shared.append(f"line{number}")
        for i in line:
            out.append([*shared, f"lpos={min(i - line[0], 4)}", f"lrpos={min(line[-1] - i, 2)}"])
    return out


def _describe_line(line: list[Token]) -> list[str]:
    feats = [f"ll={_length_bucket(len(line))}"]
    words = [token for token in line if token.is_alpha]
    if words and all(token.is_upper for token in words):
        feats.append("lupper")
    elif words and all(token.is_title or token.is_stop for token in words):
        feats.append("ltitle")
    has_year = any(_YEAR.match(token.text) for token in line)
    if has_year:
        feats.append("lyear")
    if any(token.like_num for token in line):
        feats.append("ldigit")
    if line[-1].text in (".", ":", ",", ";"):
        feats.append(f"lend={line[-1].text}")
    if any(token.text == "," for token in line):
        feats.append("lcomma")
    if has_year and any(token.lower_ in _RANGE_WORDS for token in line):
        feats.append("lrange")
    return feats


# --- gazetteer -----------------------------------------------------------------------------


def normalise(text: str) -> str:
    """The gazetteer's key for a token: lower case, every digit a ``0``."""
    return _DIGIT.sub("0", text.lower())


def _ratio_bucket(ratio: float) -> str:
    if ratio >= 0.7:
        return "h"
    if ratio >= 0.4:
        return "m"
    return "l" if ratio >= 0.15 else "v"


class Gazetteer:
    """Entity phrases and entity words of the training data, per label, with how often they occur.

    ``phrases`` maps a phrase (normalised tokens joined by a space) to ``{label: times labelled,
    "": times it occurs in the text}``; ``words`` does the same for single tokens that were part
    of an entity of that label.
    """

    def __init__(self, phrases: dict[str, dict[str, int]], words: dict[str, dict[str, int]]) -> None:
        self.phrases = phrases
        self.words = words
        self._keys = {tuple(phrase.split(" ")): counts for phrase, counts in phrases.items()}

    @classmethod
    def build(cls, docs: Sequence[tuple[Doc, Sequence[Span]]], hidden: frozenset[str] = frozenset()) -> Gazetteer:
        """From documents with their gold entity spans.

        Personal labels are left out, and so is every phrase with a ``hidden`` word or an
        e-mail-, phone- or URL-shaped token: a gazetteer is saved with the model.
        """
        hidden_keys = {normalise(word) for word in hidden}
        phrases: dict[tuple[str, ...], Counter[str]] = defaultdict(Counter)
        words: dict[str, Counter[str]] = defaultdict(Counter)
        for doc, spans in docs:
            tokens = content_tokens(doc)
            shaped = {token.i for token, kind in zip(tokens, shaped_kinds(doc, tokens), strict=True) if kind}
            for span in spans:
                if span.label_ in PERSONAL_LABELS or any(token.i in shaped for token in span):
                    continue
                key = tuple(normalise(token.text) for token in span if not token.is_space)
                if hidden_keys.intersection(key):
                    continue
                if 0 < len(key) <= MAX_PHRASE:
                    phrases[key][span.label_] += 1
                for word in key:
                    words[word][span.label_] += 1
        for doc, _ in docs:
            keys = [normalise(token.text) for token in content_tokens(doc)]
            for i, word in enumerate(keys):
                if word in words:
                    words[word][""] += 1
                for end in range(i + 1, min(i + MAX_PHRASE, len(keys)) + 1):
                    phrase = tuple(keys[i:end])
                    if phrase in phrases:
                        phrases[phrase][""] += 1
        return cls(
            {" ".join(key): dict(counts) for key, counts in phrases.items()},
            {word: dict(counts) for word, counts in words.items()},
        )

    def to_dict(self) -> dict[str, object]:
        return {"max_phrase": MAX_PHRASE, "phrases": self.phrases, "words": self.words}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Gazetteer:
        """The inverse of :meth:`to_dict` (for example after a JSON round trip)."""
        return cls(data["phrases"], data["words"])

    def features(self, tokens: list[Token]) -> list[list[str]]:
        """Per token: ``gB:<label>:<bucket>`` where a known phrase starts, ``gI:…`` inside one,
        ``gt:<label>:<bucket>`` for a known entity word."""
        keys = [normalise(token.text) for token in tokens]
        n = len(keys)
        out: list[set[str]] = [set() for _ in range(n)]
        for i in range(n):
            for end in range(i + 1, min(i + MAX_PHRASE, n) + 1):
                counts = self._keys.get(tuple(keys[i:end]))
                if counts is None:
                    continue
                for label, bucket in _labelled(counts):
                    out[i].add(f"gB:{label}:{bucket}")
                    for j in range(i + 1, end):
                        out[j].add(f"gI:{label}:{bucket}")
            counts = self.words.get(keys[i])
            if counts is not None:
                out[i].update(f"gt:{label}:{bucket}" for label, bucket in _labelled(counts))
        return [sorted(feats) for feats in out]


def _labelled(counts: dict[str, int]) -> list[tuple[str, str]]:
    """``(label, ratio bucket)`` for each label of a gazetteer entry."""
    occurrences = max(counts.get("", 1), 1)
    return [(label, _ratio_bucket(count / occurrences)) for label, count in counts.items() if label]


def cross_gazetteers(
    docs: Sequence[tuple[Doc, Sequence[Span]]], folds: int, seed: int = 0, hidden: frozenset[str] = frozenset()
) -> list[Gazetteer]:
    """For each training document, a gazetteer built from the documents of the other folds."""
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    fold_of = {index: rank % folds for rank, index in enumerate(order)}
    per_fold = [
        Gazetteer.build([doc for index, doc in enumerate(docs) if fold_of[index] != fold], hidden)
        for fold in range(folds)
    ]
    return [per_fold[fold_of[index]] for index in range(len(docs))]
