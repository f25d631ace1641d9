"""Durations in rule files: ``"30s"``, ``"5m"``, ``"1h30m"`` <-> seconds (pure)."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object) -> float:
    """``"30s"``, ``"5m"``, ``"1h"``, ``"1d"``, ``"1h30m"``, ``"250ms"`` -> seconds; ``0`` is allowed bare."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value == 0:
        return 0.0
    if not isinstance(value, str):
        raise PydanticCustomError("duration", "write a duration with its unit, like '30s', '5m' or '1h'")
    text = value.strip().replace(" ", "")
    if not text or _DURATION.sub("", text) != "":
        raise PydanticCustomError(
            "duration", "'{value}' is not a duration: write e.g. '30s', '5m', '1h', '1d' or '1h30m'", {"value": value}
        )
    return sum(float(number) * _UNITS[unit] for number, unit in _DURATION.findall(text))


def format_duration(seconds: float) -> str:
    """Seconds -> ``"1h30m"``, ``"5m"``, ``"30s"``, ``"250ms"`` (``"0s"`` for zero)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1 or seconds != int(seconds):
        whole = int(seconds)
        rest = f"{round((seconds - whole) * 1000)}ms"
        return (format_duration(whole) if whole else "") + rest
    parts, left = [], int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if left >= size:
            parts.append(f"{left // size}{unit}")
            left %= size
    return "".join(parts)


Duration = Annotated[float, BeforeValidator(parse_duration)]


def kql_timespan(seconds: float) -> str:
    """Seconds -> a KQL timespan literal: ``1d``, ``2h``, ``5m``, ``30s``, ``1500ms``."""
    if seconds != int(seconds):
        return f"{round(seconds * 1000)}ms"
    whole = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if whole and whole % size == 0:
            return f"{whole // size}{unit}"
    return f"{whole}s"


def iso_duration(seconds: float) -> str:
    """Seconds -> ISO 8601 (``PT5M``, ``PT2H10M``, ``P1D``) for the scheduled query rule's properties."""
    whole = int(round(seconds))
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    time = "".join(f"{n}{u}" for n, u in ((hours, "H"), (minutes, "M"), (secs, "S")) if n)
    text = "P" + (f"{days}D" if days else "") + (f"T{time}" if time else "")
    return text if text != "P" else "PT0S"
