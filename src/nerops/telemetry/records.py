"""What the endpoint hands to telemetry: plain records, counts only (no resume text can fit in them)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from nerops.telemetry.metrics import LIVE


@dataclass(frozen=True)
class RequestRecord:
    """One answered request, as the endpoint's front door saw it."""

    endpoint: str
    deployment: str  # "" when the request could not be routed
    model_version: str  # "" when unknown
    status: int  # HTTP status sent to the client
    latency_ms: float
    traffic_class: str = LIVE  # live | mirror (shadow copy, answer discarded) | probe | smoke


@dataclass(frozen=True)
class DocumentSignals:
    """What telemetry keeps of one scored document: counts only, never text."""

    input_chars: int
    entities: int
    entities_per_label: Mapping[str, int]
