"""The rollout state record: one JSON file per rollout, saved after every look, with its owner and lease.

    .state/rollouts/<endpoint>/v<version>-<attempt>.json            the record (atomic replace)
    .state/rollouts/<endpoint>/v<version>-<attempt>.evidence.jsonl  every look's verdict (controller.evidence)
    .state/rollouts/<endpoint>/.lock                                serialises claims and saves (fcntl)

A rollout is ``(endpoint, version, attempt)``, not a Prefect run: a new run for the same endpoint and
version resumes a rollout that has not ended. It has one owner at a time (``owner``: a flow run or
``cli:user@host``) holding a lease (``lease_until``) renewed at every look; a save by anyone else is
refused (:class:`OwnershipLost`), so two controllers never both move traffic. Taking a rollout over
needs its lease to have expired. The ledger records each change of owner (controller.ownership).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from nerops.errors import ConflictError, NeropsError
from nerops.rollout.machine import ENDED, RolloutState, state_from_dict, state_to_dict


class OwnershipLost(ConflictError):
    """Another owner holds the rollout now: this controller must stop touching it."""


class RolloutRefused(NeropsError):
    """A rollout cannot start or resume: another runs on the endpoint, or this one ended."""


@dataclass(frozen=True)
class RolloutRecord:
    endpoint: str
    model: str
    version: str
    attempt: int
    candidate: str  # the candidate's deployment name
    stable: str | None  # the deployment that served before
    stable_version: str | None
    profile: str
    policy_sha256: str
    owner: str
    lease_until: float
    state: dict = field(default_factory=dict)  # the machine's RolloutState, as plain values
    created: float = 0.0
    updated: float = 0.0
    evidence_lines: int = 0
    evidence_sha256: str = ""
    labels: tuple[str, ...] = ()
    pending: tuple[dict, ...] = ()  # manual verbs waiting for the owner's next look (verb, actor, reason, ...)
    outbox: tuple[dict, ...] = ()  # the last step's actions, saved with it and cleared once all were carried out

    @property
    def rollout_id(self) -> str:
        return rollout_id(self.endpoint, self.version, self.attempt)

    @property
    def machine(self) -> RolloutState:
        return state_from_dict(self.state)

    @property
    def ended(self) -> bool:
        return self.state.get("phase") in ENDED

    def with_machine(self, state: RolloutState) -> RolloutRecord:
        return replace(self, state=state_to_dict(state))

    def to_dict(self) -> dict:
        data = asdict(self)
        data["labels"] = list(self.labels)
        data["pending"] = list(self.pending)
        data["outbox"] = list(self.outbox)
        return data

    @classmethod
    def from_dict(cls, data: dict) -> RolloutRecord:
        return cls(
            **{
                **data,
                "labels": tuple(data.get("labels", ())),
                "pending": tuple(data.get("pending", ())),
                "outbox": tuple(data.get("outbox", ())),
            }
        )


def rollout_id(endpoint: str, version: str, attempt: int) -> str:
    return f"{endpoint}/v{version}/{attempt}"


def parse_rollout_id(text: str) -> tuple[str, str, int]:
    """``resume-ner/v7/1`` -> ``("resume-ner", "7", 1)``."""
    parts = text.strip().split("/")
    if len(parts) != 3 or not parts[1].startswith("v") or not parts[2].isdigit():
        raise RolloutRefused(f"{text!r} is not a rollout id: write ENDPOINT/vVERSION/ATTEMPT, e.g. resume-ner/v7/1")
    return parts[0], parts[1][1:], int(parts[2])


class RecordStore:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def folder(self, endpoint: str) -> Path:
        path = self.root / endpoint
        path.mkdir(parents=True, exist_ok=True)
        return path

    def path(self, endpoint: str, version: str, attempt: int) -> Path:
        return self.folder(endpoint) / f"v{version}-{attempt}.json"

    def evidence_path(self, record: RolloutRecord) -> Path:
        return self.folder(record.endpoint) / f"v{record.version}-{record.attempt}.evidence.jsonl"

    @contextlib.contextmanager
    def locked(self, endpoint: str) -> Iterator[None]:
        with (self.folder(endpoint) / ".lock").open("a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def all(self, endpoint: str) -> list[RolloutRecord]:
        records = []
        for path in sorted(self.folder(endpoint).glob("v*-*.json")):
            records.append(RolloutRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))))
        return sorted(records, key=lambda r: (r.created, int(r.version) if r.version.isdigit() else 0, r.attempt))

    def endpoints(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if p.is_dir()) if self.root.exists() else []

    def running(self, endpoint: str) -> RolloutRecord | None:
        """The endpoint's rollout that has not ended (at most one)."""
        return next((r for r in reversed(self.all(endpoint)) if not r.ended), None)

    def load(self, endpoint: str, version: str, attempt: int) -> RolloutRecord:
        path = self.path(endpoint, version, attempt)
        if not path.exists():
            raise RolloutRefused(f"no rollout {rollout_id(endpoint, version, attempt)} in {self.folder(endpoint)}")
        return RolloutRecord.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def write(self, record: RolloutRecord) -> None:
        """Write without an owner check: only under :meth:`locked`, by the claim logic."""
        path = self.path(record.endpoint, record.version, record.attempt)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".record-")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(record.to_dict(), handle, indent=2, sort_keys=True)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    def queue(self, record: RolloutRecord, command: dict) -> RolloutRecord:
        """Leave a manual verb for the owner's next look (any caller; the owner applies it and clears it)."""
        with self.locked(record.endpoint):
            current = self.load(record.endpoint, record.version, record.attempt)
            queued = replace(current, pending=(*current.pending, command))
            self.write(queued)
            return queued

    def save(
        self, record: RolloutRecord, *, now: float, lease_s: float | None = None, applied: frozenset[str] = frozenset()
    ) -> RolloutRecord:
        """Save as its owner (renewing the lease by ``lease_s``); :class:`OwnershipLost` if another owns it now.

        Manual verbs queued meanwhile stay queued; those in ``applied`` (by id) are cleared.
        """
        with self.locked(record.endpoint):
            current = self.load(record.endpoint, record.version, record.attempt)
            if current.owner != record.owner:
                raise OwnershipLost(
                    f"rollout {record.rollout_id} is owned by {current.owner} now (lease until "
                    f"{current.lease_until:.0f}), not by {record.owner}: stopping without touching it"
                )
            lease = record.lease_until if lease_s is None else now + lease_s
            later = tuple(c for c in current.pending if c.get("id") not in applied)
            saved = replace(record, updated=now, lease_until=lease, pending=later)
            self.write(saved)
            return saved

    def give_up(self, record: RolloutRecord, *, now: float) -> RolloutRecord:
        """End this owner's lease now (a controller that must stop: the next owner need not wait for it)."""
        return self.save(record, now=now, lease_s=0.0)
