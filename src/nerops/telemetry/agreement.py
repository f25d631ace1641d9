"""Shadow agreement, pure: two answers for the same document -> counts per label, never text.

For a mirrored request the front door has the answer the client got (the reference deployment's)
and the mirror copy's (the candidate's); for a probe pair, the prober has both. An entity matches
when its label, start and end are equal in both answers (a multiset: two equal entities match two);
the document agrees exactly when nothing is left over on either side. Only ``label``, ``start`` and
``end`` are read: an entity's ``text`` never reaches telemetry.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LabelAgreement:
    matched: int = 0
    candidate_only: int = 0
    reference_only: int = 0


@dataclass(frozen=True)
class Agreement:
    """One document's comparison: per label counts, and whether the two answers were identical."""

    per_label: Mapping[str, LabelAgreement]
    exact: bool


def _keys(entities: Iterable[Mapping[str, Any]]) -> Counter[tuple[str, int, int]]:
    return Counter((str(e["label"]), int(e["start"]), int(e["end"])) for e in entities)


def compare(candidate: Iterable[Mapping[str, Any]], reference: Iterable[Mapping[str, Any]]) -> Agreement:
    """The candidate's entities against the reference's, for one document."""
    ours, theirs = _keys(candidate), _keys(reference)
    both = ours & theirs
    only_ours, only_theirs = ours - theirs, theirs - ours
    labels = sorted({label for label, _, _ in ours} | {label for label, _, _ in theirs})

    def count(counter: Counter[tuple[str, int, int]], label: str) -> int:
        return sum(n for (name, _, _), n in counter.items() if name == label)

    per_label = {
        label: LabelAgreement(count(both, label), count(only_ours, label), count(only_theirs, label))
        for label in labels
    }
    return Agreement(per_label, not only_ours and not only_theirs)


def documents_of(payload: Mapping[str, Any]) -> list[list[Mapping[str, Any]]]:
    """The entity lists of a scoring answer: one for ``{"entities": ...}``, one per document of a batch."""
    if "documents" in payload:
        return [list(document["entities"]) for document in payload["documents"]]
    return [list(payload["entities"])]


def compare_answers(candidate: Mapping[str, Any], reference: Mapping[str, Any]) -> list[Agreement] | None:
    """Per document agreement of two scoring answers; None when they do not describe the same documents."""
    try:
        ours, theirs = documents_of(candidate), documents_of(reference)
    except (KeyError, TypeError):
        return None
    if len(ours) != len(theirs):
        return None
    try:
        return [compare(a, b) for a, b in zip(ours, theirs, strict=True)]
    except (KeyError, TypeError, ValueError):
        return None
