"""GitHub's path filters (``on.push.paths``), evaluated here with the same semantics.

One list, ``TRAINING_PATHS``, says which changed files mean "retrain": the webhook receiver reads it, and
``.github/workflows/train.yml`` lists the same patterns (a test holds them equal).

Semantics (GitHub's "filter pattern cheat sheet", Workflow syntax for GitHub Actions):

- ``*`` matches zero or more characters but not ``/``;
- ``**`` matches zero or more of any character, ``/`` included; ``**/`` matches zero or more whole directories
  (``docs/**/*.md`` matches ``docs/README.md``, ``**/README.md`` matches ``README.md``);
- ``?`` matches zero or one of the preceding character, ``+`` one or more of it (after a wildcard they add
  nothing: ``*`` already matches zero or more characters);
- ``[...]`` matches one character listed in the brackets or included in a range (ranges only within
  ``a-z``, ``A-Z`` or ``0-9``);
- ``\\`` makes the next character literal;
- a leading ``!`` negates the pattern (anywhere else ``!`` is an ordinary character).

A pattern must match the whole path, from the repository's root, case-sensitively. Patterns are read in order
and the last one that matches a path decides: a negated pattern excludes what an earlier pattern included, a
later positive pattern includes it again; a path no pattern matches is not included. A push touches the paths
when at least one of its files ends up included.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

# What shapes a trained model: the training code and model configs (all of src/nerops/model/ except the
# fault-injection component, which only alters models in serving), the data loading and the dataset pins
# (zip names and sha256), the dataset split and version, the training flow and its tasks, and the pinned
# library versions. Keep in step with .github/workflows/train.yml (tests/test_github_workflows.py checks it).
TRAINING_PATHS: tuple[str, ...] = (
    "src/nerops/model/**",
    "!src/nerops/model/faults.py",
    "src/nerops/data.py",
    "src/nerops/dataset.py",
    "flows/retrain_model.py",
    "tasks/training.py",
    "constraints.txt",
)

_RANGES = ("az", "AZ", "09")

# Atom kinds: a wildcard (``?``/``+`` after it add nothing), a single character or set (``?``/``+`` apply),
# or an atom already quantified (a second ``?``/``+`` is an error).
_WILD, _ONE, _QUANTIFIED = "wild", "one", "quantified"


def _bracket(pattern: str, start: int) -> tuple[str, int]:
    """The regex of the ``[...]`` starting at ``start``, and the index after its ``]``."""
    i = start + 1
    members: list[str] = []
    while i < len(pattern) and pattern[i] != "]":
        c = pattern[i]
        if c == "/":
            raise ValueError(f"invalid pattern {pattern!r}: '/' inside brackets")
        if i + 2 < len(pattern) and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = c, pattern[i + 2]
            if not any(a <= low <= high <= b for a, b in _RANGES):
                raise ValueError(f"invalid pattern {pattern!r}: range {low}-{high} is not within a-z, A-Z or 0-9")
            members.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 3
            continue
        members.append(re.escape(c))
        i += 1
    if i >= len(pattern):
        raise ValueError(f"invalid pattern {pattern!r}: '[' without a closing ']'")
    if not members:
        raise ValueError(f"invalid pattern {pattern!r}: empty brackets '[]'")
    return "[" + "".join(members) + "]", i + 1


def _add_wildcard(atoms: list[tuple[str, str]], regex: str) -> None:
    """Append a wildcard, merged with a wildcard right before it (``*?*``, ``**/**``): the same language, and
    no run of adjacent wildcards for the regex engine to backtrack through."""
    if atoms and atoms[-1][0] == _WILD:
        previous = atoms[-1][1]
        if previous == regex:
            return
        if ".*" in (previous, regex):
            atoms[-1] = (_WILD, ".*")
            return
    atoms.append((_WILD, regex))


@lru_cache(maxsize=256)
def _compile(pattern: str) -> re.Pattern[str]:
    atoms: list[tuple[str, str]] = []  # (kind, regex)
    i = 0
    while i < len(pattern):
        c = pattern[i]
        if c == "*":
            if pattern.startswith("**/", i):
                _add_wildcard(atoms, "(?:.+/)?")
                i += 3
            elif pattern.startswith("**", i):
                _add_wildcard(atoms, ".*")
                i += 2
            else:
                _add_wildcard(atoms, "[^/]*")
                i += 1
        elif c in "?+" and atoms:
            kind, regex = atoms[-1]
            if kind == _QUANTIFIED:
                raise ValueError(f"invalid pattern {pattern!r}: {c!r} after '?' or '+' at {i}")
            if kind == _ONE:
                atoms[-1] = (_QUANTIFIED, f"(?:{regex}){c}")
            i += 1
        elif c == "[":
            regex, i = _bracket(pattern, i)
            atoms.append((_ONE, regex))
        elif c == "\\":
            if i + 1 >= len(pattern):
                raise ValueError(f"invalid pattern {pattern!r}: nothing after '\\'")
            atoms.append((_ONE, re.escape(pattern[i + 1])))
            i += 2
        else:  # an ordinary character (a '?' or '+' with nothing before it is one too)
            atoms.append((_ONE, re.escape(c)))
            i += 1
    return re.compile("".join(regex for _, regex in atoms) + r"\Z")


def matches(pattern: str, path: str) -> bool:
    """Whether one (non-negated) pattern matches a whole repository path; ``ValueError`` if it is invalid."""
    return _compile(pattern).match(path) is not None


def included(patterns: Sequence[str], path: str) -> bool:
    """Whether ``path`` is included by an ordered list of patterns with ``!`` negations (the last match decides)."""
    verdict = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if matches(pattern[1:] if negated else pattern, path):
            verdict = not negated
    return verdict


def touched(patterns: Sequence[str], files: Iterable[str]) -> list[str]:
    """The files that ``patterns`` include, in their given order."""
    return [path for path in files if included(patterns, path)]
