"""Reading a YAML file that must hold a mapping: one error, naming the file and the line, for both of our
declarative files (``alerts/rules.yaml``, ``rollouts/policy.yaml``)."""

from __future__ import annotations

import yaml

from nerops.errors import ConfigurationError


def yaml_mapping(text: str, *, source: str, error: type[ConfigurationError], expected: str) -> dict:
    """``text`` parsed; ``error`` names ``source`` (with line and column) if it is not YAML or not a mapping."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise error(f"{source}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise error(f"{source}: expected a mapping with {expected}, not {type(raw).__name__}")
    return raw
