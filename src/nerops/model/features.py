"""Token features for the CRF: word form, shape, affixes, line layout, CV section, context.

A CV's newlines were collapsed into double spaces, so a whitespace token marks a line break;
whitespace tokens are not tagged, they only feed the ``bol``/``eol`` features of their
neighbours. Features are strings (``"lower=java"``), as python-crfsuite takes them.
"""

from __future__ import annotations

import re

from spacy.tokens import Doc, Token

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


def content_tokens(doc: Doc) -> list[Token]:
    """The tokens the CRF tags: everything but whitespace."""
    return [token for token in doc if not token.is_space]


def doc_features(doc: Doc, window: int = 2) -> list[list[str]]:
    """One feature list per content token of ``doc``."""
    tokens = content_tokens(doc)
    n = len(tokens)
    base = [_token_features(doc, token) for token in tokens]
    sections = _sections(doc, tokens)
    out: list[list[str]] = []
    for i, token in enumerate(tokens):
        feats = ["bias", *base[i], f"sec={sections[i]}", f"pos={_position_bucket(i, n)}"]
        for offset in range(-window, window + 1):
            if offset == 0:
                continue
            j = i + offset
            if 0 <= j < n:
                lower, shape, bol = base[j][0], base[j][1], base[j][-1]
                feats += [f"{offset}:{lower}", f"{offset}:{shape}", f"{offset}:{bol}"]
            else:
                feats.append(f"{offset}:pad")
        if i > 0:
            feats.append(f"bi-1={tokens[i - 1].lower_}|{token.lower_}")
        if i + 1 < n:
            feats.append(f"bi+1={token.lower_}|{tokens[i + 1].lower_}")
        out.append(feats)
    return out


def _token_features(doc: Doc, token: Token) -> list[str]:
    text = token.text
    lower = token.lower_
    feats = [
        f"lower={lower}",
        f"shape={token.shape_}",
        f"pre3={lower[:3]}",
        f"suf3={lower[-3:]}",
        f"suf2={lower[-2:]}",
        f"len={min(len(text), 12)}",
    ]
    if token.is_title:
        feats.append("title")
    if token.is_upper:
        feats.append("upper")
    if token.is_digit:
        feats.append("digit")
    if token.like_num:
        feats.append("num")
    if token.like_email:
        feats.append("email")
    if token.like_url:
        feats.append("url")
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
