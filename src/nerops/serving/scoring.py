"""The one scoring module: validate a request, predict, and summarise what telemetry may keep.

Used by the local endpoint's workers and by the Azure ML deployment's scoring script alike.

Request (``Content-Type: application/json``, UTF-8)::

    {"text": "..."}                      one CV
    {"documents": ["...", "..."]}        a batch

Response: ``{"entities": [{label, start, end, text}], "model_version", "deployment"}`` for one
text, ``{"documents": [{"entities": [...]}, ...], ...}`` for a batch. Bad input raises
:class:`ScoringError` with an HTTP status and a JSON body ``{"error": {"code", "message"}}``
that says what is wrong without quoting the input. Only the entities in the answer to the
caller carry resume text; :class:`~nerops.telemetry.DocumentSignals` carry counts only.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from nerops.telemetry import DocumentSignals


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1_000_000
    max_documents: int = 32
    max_text_chars: int = 200_000


class ScoringError(Exception):
    """A client error: the status to answer with, a stable code and a message without input text."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


class Predictor(Protocol):
    def predict(self, text: str) -> list[dict[str, object]]: ...


@dataclass(frozen=True)
class Scored:
    payload: dict[str, object]
    signals: tuple[DocumentSignals, ...]


def check_content_type(content_type: str | None) -> None:
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != "application/json":
        raise ScoringError(415, "unsupported_media_type", f"Content-Type must be application/json, not {media!r}")
    charset = _param(content_type or "", "charset")
    if charset and charset.lower() not in ("utf-8", "utf8"):
        raise ScoringError(415, "unsupported_charset", f"charset must be utf-8, not {charset!r}")


def parse_request(body: bytes, content_type: str | None, limits: Limits = Limits()) -> tuple[list[str], bool]:
    """The texts of a request and whether it was a batch; raises ScoringError on bad input."""
    check_content_type(content_type)
    if len(body) > limits.max_body_bytes:
        raise ScoringError(413, "payload_too_large", f"body is {len(body)} bytes; the limit is {limits.max_body_bytes}")
    if not body:
        raise ScoringError(400, "empty_body", 'the request body is empty; send {"text": "..."}')
    try:
        decoded = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScoringError(400, "invalid_utf8", f"the body is not valid UTF-8 (byte {exc.start})") from None
    try:
        data = json.loads(decoded)
    except (json.JSONDecodeError, RecursionError) as exc:
        where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
        raise ScoringError(400, "invalid_json", f"the body is not valid JSON{where}") from None
    if not isinstance(data, dict):
        raise ScoringError(422, "invalid_request", f"the body must be a JSON object, not {_kind(data)}")
    has_text, has_documents = "text" in data, "documents" in data
    if has_text == has_documents:
        raise ScoringError(422, "invalid_request", "send exactly one of 'text' (a string) or 'documents' (a list)")
    if has_text:
        return [_check_text(data["text"], "text", limits)], False
    documents = data["documents"]
    if not isinstance(documents, list):
        raise ScoringError(422, "invalid_documents", f"'documents' must be a list of strings, not {_kind(documents)}")
    if not documents:
        raise ScoringError(422, "invalid_documents", "'documents' is empty")
    if len(documents) > limits.max_documents:
        raise ScoringError(
            422, "too_many_documents", f"{len(documents)} documents; at most {limits.max_documents} per request"
        )
    return [_check_text(text, f"documents[{i}]", limits) for i, text in enumerate(documents)], True


def score(texts: Sequence[str], batch: bool, predictor: Predictor, *, model_version: str, deployment: str) -> Scored:
    """Predict every text; the payload for the caller and the count-only signals for telemetry."""
    results = [predictor.predict(text) for text in texts]
    signals = tuple(signals_of(text, entities) for text, entities in zip(texts, results, strict=True))
    identity = {"model_version": model_version, "deployment": deployment}
    if batch:
        return Scored({"documents": [{"entities": e} for e in results], **identity}, signals)
    return Scored({"entities": results[0], **identity}, signals)


def signals_of(text: str, entities: Sequence[dict[str, object]]) -> DocumentSignals:
    return DocumentSignals(
        input_chars=len(text),
        entities=len(entities),
        entities_per_label=dict(Counter(str(entity["label"]) for entity in entities)),
    )


def _check_text(value: object, field: str, limits: Limits) -> str:
    if not isinstance(value, str):
        raise ScoringError(422, "invalid_text", f"'{field}' must be a string, not {_kind(value)}")
    if not value.strip():
        raise ScoringError(422, "empty_text", f"'{field}' is empty or only whitespace")
    if len(value) > limits.max_text_chars:
        raise ScoringError(
            422, "text_too_long", f"'{field}' has {len(value)} characters; the limit is {limits.max_text_chars}"
        )
    if "\x00" in value:
        raise ScoringError(422, "invalid_text", f"'{field}' contains a NUL character")
    return value


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number" if isinstance(value, int | float) else type(value).__name__
    )


def _param(content_type: str, name: str) -> str | None:
    for part in content_type.split(";")[1:]:
        key, _, value = part.partition("=")
        if key.strip().lower() == name:
            return value.strip().strip('"')
    return None
