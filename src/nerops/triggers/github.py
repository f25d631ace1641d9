"""GitHub deliveries, decided: is a delivery signed, and does a push want a retrain? Pure functions, no I/O.

The receiver (``receiver.py``) reads the body, then asks here: ``check_signature`` (``X-Hub-Signature-256``
against every accepted secret, in constant time), ``decide`` (``push``: retrain or ignored, with the reason;
``ping``: pong) and ``retrain_event`` (the Prefect event a retrain posts).

What a push payload holds (GitHub docs, "Webhook events and payloads", push,
https://docs.github.com/en/webhooks/webhook-events-and-payloads#push; its text as GitHub's
OpenAPI webhook schema and public copies of the page carry it):

- ``commits``: "An array of commit objects describing the pushed commits ... The array includes a maximum of
  2048 commits. If necessary, you can use the Commits API to fetch additional commits." Older versions of the
  page said "a maximum of 20 commits" and added "This limit is applied to timeline events only and isn't
  applied to webhook deliveries": 20 is the Events API's (timeline) cap, 2048 the webhook's.
- each commit's ``added`` / ``removed`` / ``modified``: "A maximum of 3000 changed files will be reported per
  commit."
- GitHub Actions' copy of the payload has no ``added``/``removed``/``modified`` at all (events that trigger
  workflows, push): a commit without them is an incomplete list too.
- ``forced``: the push rewrote history: files can change between ``before`` and ``after`` (a dropped commit)
  without any listed commit naming them. ``created``: there is no earlier state of the branch to compare with.
- "Payloads are capped at 25 MB. If an event generates a larger payload, GitHub will not deliver a payload".

So a push whose lists may be incomplete is treated as touching the training paths, and says so in its reason
("file lists may be incomplete: ...") and in ``files_complete``. Reasons never quote payload text (commit
messages, file names, other branches' names): counts and the watched branch only; they go to the log too.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any, Literal

from nerops.triggers.paths import TRAINING_PATHS, touched

EVENT_NAME = "nerops.github.retrain-requested"
KNOWN_EVENTS = ("push", "ping")
MAX_COMMITS = 2048  # the push payload's cap on `commits` (webhook deliveries)
MAX_FILES_PER_COMMIT = 3000  # the cap on a commit's changed files reported in the payload
MAX_MATCHED_IN_EVENT = 50
ZERO_SHA = "0" * 40
_SIGNATURE = re.compile(r"sha256=([0-9a-fA-F]{64})\Z")
# the event id is a function of the delivery (and its body): a redelivery after an answer that was lost posts
# the same id, and the Prefect server stores an event id once and its triggers skip ids already seen
_EVENT_NAMESPACE = uuid.UUID("5b0f7f5e-2c1e-4a54-9f3c-6f1d2f8a7c31")


class Signature(Enum):
    VALID = "valid"
    MISSING = "missing"
    MALFORMED = "malformed"
    WRONG = "wrong"


def sign(secret: str | bytes, body: bytes) -> str:
    """The ``X-Hub-Signature-256`` header GitHub sends for ``body``: ``sha256=`` + HMAC-SHA256 hex."""
    key = secret.encode() if isinstance(secret, str) else secret
    return "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest()


def check_signature(header: str | None, body: bytes, secrets: Sequence[str | bytes]) -> Signature:
    """Whether ``header`` is the HMAC-SHA256 of the raw ``body`` under one of ``secrets`` (constant time).

    Every secret is compared (no early exit), so the time does not tell which one matched."""
    if header is None or not header.strip():
        return Signature.MISSING
    found = _SIGNATURE.match(header.strip())
    if found is None:
        return Signature.MALFORMED
    given = found.group(1).lower().encode()
    matched = False
    for secret in secrets:
        key = secret.encode() if isinstance(secret, str) else secret
        expected = hmac.new(key, body, hashlib.sha256).hexdigest().encode()
        matched |= hmac.compare_digest(expected, given)
    return Signature.VALID if matched else Signature.WRONG


class PayloadError(ValueError):
    """A signed payload without the fields its event always has (the message names the field, never a value)."""


@dataclass(frozen=True)
class Decision:
    """What a delivery asks for. ``verdict`` is ``retrain``, ``ignored`` or ``pong``; ``reason`` is safe to log."""

    verdict: Literal["retrain", "ignored", "pong"]
    reason: str
    repository: str | None = None
    ref: str | None = None
    before: str | None = None
    after: str | None = None
    pusher: str | None = None
    changed: int = 0  # distinct changed files listed in the payload
    matched: tuple[str, ...] = field(default=())  # those the training paths include, in payload order
    files_complete: bool = True
    zen: str | None = None  # ping only
    hook_id: int | None = None  # ping only

    @property
    def wanted(self) -> bool:
        return self.verdict == "retrain"


def decide(
    event: str,
    payload: Mapping[str, Any],
    *,
    branch: str | None = None,
    repository: str | None = None,
    patterns: Sequence[str] = TRAINING_PATHS,
    now: float | None = None,
    max_age_s: float | None = None,
) -> Decision:
    """The decision on one (signed, parsed) delivery of ``event``.

    ``branch`` overrides the repository's default branch (``payload.repository.default_branch``);
    ``repository`` (``owner/repo``) accepts pushes of that repository only; with ``now`` and ``max_age_s``, a
    push whose ``repository.pushed_at`` is older than ``max_age_s`` is ignored as stale (a captured body
    replayed after the receiver forgot its hash). Raises ``PayloadError`` when a required field is missing
    and ``ValueError`` for an event other than ``push`` and ``ping``."""
    if event == "ping":
        hook_id = payload.get("hook_id")
        zen = payload.get("zen")
        return Decision(
            "pong",
            "ping: the hook reaches the receiver",
            repository=_repository_name(payload, required=False),
            zen=zen if isinstance(zen, str) else None,
            hook_id=hook_id if isinstance(hook_id, int) else None,
        )
    if event != "push":
        raise ValueError(f"no decision for event {event!r}: only {', '.join(KNOWN_EVENTS)}")
    return _decide_push(payload, branch, repository, patterns, now, max_age_s)


def _decide_push(
    payload: Mapping[str, Any],
    branch: str | None,
    repository: str | None,
    patterns: Sequence[str],
    now: float | None,
    max_age_s: float | None,
) -> Decision:
    name = _repository_name(payload, required=True)
    ref = payload.get("ref")
    if not isinstance(ref, str) or not ref:
        raise PayloadError("a push payload without 'ref'")
    before, after = _sha(payload.get("before")), _sha(payload.get("after"))
    facts = {"repository": name, "ref": ref, "before": before, "after": after, "pusher": _pusher(payload)}

    def ignored(reason: str, **more: Any) -> Decision:
        return Decision("ignored", reason, **facts, **more)

    if repository is not None and (name or "").lower() != repository.lower():
        return ignored(f"not the configured repository {repository}")
    if ref.startswith("refs/tags/"):
        return ignored("a tag push")
    if not ref.startswith("refs/heads/"):
        return ignored("not a branch push")
    if payload.get("deleted") is True or after == ZERO_SHA:
        return ignored("a branch deletion")
    watched = _watched_branch(payload, branch)
    if watched is None:
        raise PayloadError("a push payload without 'repository.default_branch' (and no branch configured)")
    if ref != watched:
        return ignored(f"not a push to the watched branch {watched}")
    stale = _stale(payload, now, max_age_s)
    if stale:
        return ignored(stale)

    files, gaps = _changed_files(payload)
    matched = tuple(touched(patterns, files))
    if gaps:
        reason = f"file lists may be incomplete: {'; '.join(gaps)}; treated as touching the training paths"
        if matched:
            reason = f"{len(matched)} of {len(files)} listed changed file(s) match the training paths; {reason}"
        return Decision("retrain", reason, **facts, changed=len(files), matched=matched, files_complete=False)
    if matched:
        reason = f"{len(matched)} of {len(files)} changed file(s) match the training paths"
        return Decision("retrain", reason, **facts, changed=len(files), matched=matched)
    return ignored(f"none of {len(files)} changed file(s) match the training paths", changed=len(files))


def _repository_name(payload: Mapping[str, Any], *, required: bool) -> str | None:
    repo = payload.get("repository")
    name = repo.get("full_name") if isinstance(repo, Mapping) else None
    if isinstance(name, str) and name:
        return name
    if required:
        raise PayloadError("a push payload without 'repository.full_name'")
    return None


def _watched_branch(payload: Mapping[str, Any], branch: str | None) -> str | None:
    if branch:
        return branch if branch.startswith("refs/heads/") else f"refs/heads/{branch}"
    repo = payload.get("repository")
    default = repo.get("default_branch") if isinstance(repo, Mapping) else None
    if not isinstance(default, str) or not default:
        default = repo.get("master_branch") if isinstance(repo, Mapping) else None  # older payloads
    return f"refs/heads/{default}" if isinstance(default, str) and default else None


def _sha(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _pusher(payload: Mapping[str, Any]) -> str | None:
    """The pusher's GitHub name (``pusher.name``; ``sender.login`` when absent). Never an email address."""
    for key, attribute in (("pusher", "name"), ("sender", "login")):
        value = payload.get(key)
        name = value.get(attribute) if isinstance(value, Mapping) else None
        if isinstance(name, str) and name:
            return name
    return None


def _stale(payload: Mapping[str, Any], now: float | None, max_age_s: float | None) -> str | None:
    if now is None or max_age_s is None:
        return None
    repo = payload.get("repository")
    pushed = repo.get("pushed_at") if isinstance(repo, Mapping) else None
    when: float | None = None
    if isinstance(pushed, int | float) and not isinstance(pushed, bool):
        when = float(pushed)  # push payloads: a unix time
    elif isinstance(pushed, str):
        try:
            when = datetime.fromisoformat(pushed.replace("Z", "+00:00")).timestamp()
        except ValueError:
            when = None
    if when is not None and now - when > max_age_s:
        return f"stale: pushed more than {max_age_s / 86400:g} day(s) ago, beyond the replay window"
    return None


def _changed_files(payload: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """The distinct files that commits and head_commit list (added, modified, removed), and why the lists may
    be incomplete (empty: complete)."""
    gaps: list[str] = []
    if payload.get("forced") is True:
        gaps.append("a forced push (history rewritten)")
    if payload.get("created") is True:
        gaps.append("the branch was created (no earlier state to compare with)")
    commits = payload.get("commits")
    if not isinstance(commits, list):
        commits = []
    head = payload.get("head_commit")
    if not commits:
        gaps.append("the payload lists no commits")
    elif len(commits) >= MAX_COMMITS:
        gaps.append(f"{len(commits)} commits listed, GitHub's cap ({MAX_COMMITS})")
    if not isinstance(head, Mapping):
        gaps.append("no head_commit")
    seen: dict[str, None] = {}
    without_lists = capped = 0
    for commit in [*commits, *([head] if isinstance(head, Mapping) else [])]:
        if not isinstance(commit, Mapping):
            without_lists += 1
            continue
        lists = [commit.get(key) for key in ("added", "modified", "removed")]
        if not all(isinstance(files, list) for files in lists):
            without_lists += 1
            continue
        if sum(len(files) for files in lists) >= MAX_FILES_PER_COMMIT:
            capped += 1
        for files in lists:
            seen.update((path, None) for path in files if isinstance(path, str))
    if without_lists:
        gaps.append(f"{without_lists} commit(s) without file lists")
    if capped:
        gaps.append(f"{capped} commit(s) at GitHub's cap of {MAX_FILES_PER_COMMIT} files")
    return list(seen), gaps


def event_id(delivery: str, body_sha256: str) -> str:
    """The Prefect event id of a delivery: the same for a redelivery of the same body under the same id."""
    return str(uuid.uuid5(_EVENT_NAMESPACE, f"{delivery}:{body_sha256}"))


def retrain_event(decision: Decision, delivery: str, body_sha256: str, occurred: datetime | None = None) -> dict:
    """The ``nerops.github.retrain-requested`` event (JSON-ready) for a ``retrain`` decision.

    The payload holds the push's coordinates and the decision only: no commit message, no author, no email."""
    if not decision.wanted:
        raise ValueError(f"no retrain event for a {decision.verdict!r} decision")
    occurred = occurred or datetime.now(UTC)
    repository = decision.repository or ""
    return {
        "id": event_id(delivery, body_sha256),
        "event": EVENT_NAME,
        "occurred": occurred.astimezone(UTC).isoformat(),
        "resource": {"prefect.resource.id": f"nerops.github.delivery.{delivery}", "prefect.resource.name": repository},
        "related": [
            {"prefect.resource.id": f"nerops.github.repository.{repository}", "prefect.resource.role": "repository"}
        ],
        "payload": {
            "delivery": delivery,
            "repository": repository,
            "ref": decision.ref,
            "commit": decision.after,
            "before": decision.before,
            "pusher": decision.pusher,
            "matched": list(decision.matched[:MAX_MATCHED_IN_EVENT]),
            "files_complete": decision.files_complete,
            "reason": decision.reason,
        },
    }


def known_event(name: str | None) -> bool:
    return name in KNOWN_EVENTS
