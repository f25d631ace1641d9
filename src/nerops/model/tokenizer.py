"""The tokenizer every pipeline of this package starts from: spaCy's English one, splitting a little more."""

from __future__ import annotations

import spacy
from spacy.language import Language

_EXTRA_INFIXES = (r"[/|•·]", r"(?<=[\w)]),(?=\S)", r"(?<=\w)[()](?=\w)")


def blank_pipeline() -> Language:
    """An English blank pipeline whose tokenizer also splits on ``/``, ``|``, bullets and tight commas."""
    nlp = spacy.blank("en")
    infixes = list(nlp.Defaults.infixes) + list(_EXTRA_INFIXES)
    nlp.tokenizer.infix_finditer = spacy.util.compile_infix_regex(infixes).finditer
    return nlp
