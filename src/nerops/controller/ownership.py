"""Claiming a rollout: start one, resume one that has not ended, or take one over whose owner's lease expired.

Every claim runs under the endpoint's record lock, and its ledger entry is a compare-and-append:

    rollout_started   a new rollout (refused while another rollout of the endpoint is open in the ledger)
    rollout_owner     a new owner for an open rollout (refused unless the ledger's owner is the one replaced)
    rollout_finished  the rollout ended (phase, why); written by :func:`nerops.controller.run.finish`

A second rollout for the same endpoint is refused at once, naming the running one and its owner.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from nerops.controller.records import RecordStore, RolloutRecord, RolloutRefused
from nerops.errors import ConflictError
from nerops.ledger import Entry, Ledger
from nerops.telemetry.durations import format_duration


def open_rollouts(entries: list[Entry], endpoint: str) -> dict[str, Entry]:
    """The endpoint's rollouts the ledger holds open: rollout id -> its latest start or owner entry."""
    open_: dict[str, Entry] = {}
    for entry in entries:
        if entry.subject.get("endpoint") != endpoint or "rollout" not in entry.subject:
            continue
        rid = entry.subject["rollout"]
        if entry.kind in ("rollout_started", "rollout_owner"):
            open_[rid] = entry
        elif entry.kind == "rollout_finished":
            open_.pop(rid, None)
    return open_


def once(kind: str, rollout: str) -> Callable[[list[Entry]], Entry | None]:
    """A ledger check that makes an entry of ``kind`` for ``rollout`` happen once: a retry finds the first."""

    def check(entries: list[Entry]) -> Entry | None:
        return next((e for e in reversed(entries) if e.kind == kind and e.subject.get("rollout") == rollout), None)

    return check


def subject(record: RolloutRecord) -> dict:
    return {"model": record.model, "version": record.version, "endpoint": record.endpoint, "rollout": record.rollout_id}


def _lease_words(record: RolloutRecord, now: float) -> str:
    left = round(record.lease_until - now)
    return f"lease ends in {format_duration(left)}" if left > 0 else f"lease expired {format_duration(-left)} ago"


def check_claimable(
    store: RecordStore, *, endpoint: str, version: str, owner: str, now: float, force: str = ""
) -> RolloutRecord | None:
    """The endpoint's running rollout that ``owner`` may resume or take over (None: none runs), or
    :class:`RolloutRefused`: another version's rollout runs, or this one's owner holds a live lease."""
    running = store.running(endpoint)
    if running is not None and running.version != version:
        raise RolloutRefused(
            f"a rollout is already running on endpoint {endpoint!r}: {running.rollout_id}, owned by "
            f"{running.owner} ({_lease_words(running, now)}); one rollout per endpoint at a time"
        )
    if running is not None and running.owner != owner and running.lease_until > now and not force:
        raise RolloutRefused(
            f"rollout {running.rollout_id} is owned by {running.owner} ({_lease_words(running, now)}): "
            "it resumes or is taken over only after that lease"
        )
    return running


def claim(
    store: RecordStore,
    ledger: Ledger,
    *,
    endpoint: str,
    version: str,
    owner: str,
    now: float,
    lease_s: float,
    new_attempt: bool,
    make_record: Callable[[int], RolloutRecord],
    start_evidence: Callable[[RolloutRecord], dict],
    force: str = "",
) -> tuple[RolloutRecord, str]:
    """``(record, "started" | "resumed" | "taken over")``; :class:`RolloutRefused` says why not.

    ``force`` (a reason) takes a running rollout over although its owner's lease runs: what a manual
    rollback does when the owner did not act on it in time.
    """
    with store.locked(endpoint):
        running = check_claimable(store, endpoint=endpoint, version=version, owner=owner, now=now, force=force)
        if running is not None:
            how = "resumed" if running.owner == owner else "taken over"
            taken = replace(running, owner=owner, lease_until=now + lease_s, updated=now)
            if how == "taken over":
                _append_owner(ledger, running, taken, force)
            store.write(taken)
            return taken, how
        earlier = [r for r in store.all(endpoint) if r.version == version]
        if earlier and not new_attempt:
            last = earlier[-1]
            raise RolloutRefused(
                f"rollout {last.rollout_id} ended ({last.state.get('phase')}: {last.state.get('ending', '')[:200]}); "
                "ask for a new attempt to roll this version out again"
            )
        attempt = max((r.attempt for r in earlier), default=0) + 1
        record = make_record(attempt)
        _append_started(ledger, record, start_evidence(record))
        store.write(record)
        return record, "started"


def _append_started(ledger: Ledger, record: RolloutRecord, evidence: dict) -> Entry:
    def check(entries: list[Entry]) -> Entry | None:
        for rid, entry in open_rollouts(entries, record.endpoint).items():
            if rid == record.rollout_id:
                return entry  # a retry of this very start
            raise ConflictError(
                f"the ledger holds rollout {rid} open on endpoint {record.endpoint!r} (entry {entry.seq}, "
                f"owner {entry.evidence.get('owner')}): end it (nerops rollout abort/rollback) before another"
            )
        return None

    return ledger.append(
        "rollout_started",
        subject=subject(record),
        evidence={"owner": record.owner, **evidence},
        actor=record.owner,
        check=check,
    )


def _append_owner(ledger: Ledger, before: RolloutRecord, after: RolloutRecord, force: str = "") -> Entry:
    def check(entries: list[Entry]) -> Entry | None:
        entry = open_rollouts(entries, before.endpoint).get(before.rollout_id)
        recorded = entry.evidence.get("owner") if entry else None
        if entry is None or recorded not in (before.owner, after.owner):
            raise ConflictError(
                f"rollout {before.rollout_id}: the ledger's owner is {recorded!r}, not {before.owner!r}: "
                "someone else took it over first"
            )
        return entry if recorded == after.owner else None

    evidence = {"owner": after.owner, "previous_owner": before.owner, "previous_lease_until": before.lease_until}
    if force:
        evidence["forced"] = force
    return ledger.append("rollout_owner", subject=subject(before), evidence=evidence, actor=after.owner, check=check)
