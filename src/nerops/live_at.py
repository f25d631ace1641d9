""" "What was live at T", from the ledger alone. Pure: entries in, answer out.

Per endpoint and deployment: the version, the traffic weight and the mirror share in force at ``T``,
since when and set by which entry, and who approved that version on what evidence (the approval, or an
old ``promotion``, at or before ``T``, with the gate it rested on). Also the champion at ``T``.
Entries are read in ledger order up to the last one whose time is at or before ``T``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime

from nerops.decisions import Record, Ref, replay
from nerops.errors import ConfigurationError


@dataclass(frozen=True)
class Approval:
    by: Ref
    reason: str | None
    gate_seq: int | None
    gate_summary: str | None


@dataclass(frozen=True)
class LiveDeployment:
    endpoint: str
    deployment: str
    version: str
    weight: int
    mirror: int
    since: Ref  # the entry that set this weight and mirror share (or created the deployment)
    approved: Approval | None


@dataclass(frozen=True)
class LiveAt:
    time: str
    champion: str | None
    champion_by: Ref | None
    deployments: tuple[LiveDeployment, ...]

    def to_dict(self) -> dict:
        return asdict(self)

    def describe(self) -> str:
        champion = f"v{self.champion}, since {self.champion_by.words()}" if self.champion_by else "none"
        lines = [f"at {self.time}: champion {champion}"]
        if not self.deployments:
            lines.append("  no deployment existed")
        for d in self.deployments:
            lines.append(
                f"  {d.endpoint}/{d.deployment}: v{d.version}, weight {d.weight} %, mirror {d.mirror} %, "
                f"since {d.since.words()}"
            )
            if d.approved:
                gate = f", on gate entry {d.approved.gate_seq}" if d.approved.gate_seq else ""
                lines.append(
                    f"    approved by {d.approved.by.actor} at {d.approved.by.time}{gate}: {d.approved.reason}"
                )
                if d.approved.gate_summary:
                    lines.append(f"    evidence: {d.approved.gate_summary}")
            else:
                lines.append("    no approval of this version in the ledger")

        return "\n".join(lines)


def ledger_time(value: str | datetime) -> str:
    """A moment in the ledger's own format (UTC, microseconds, ``Z``), from ISO 8601 text or a datetime."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ConfigurationError(f"{value!r} is not an ISO 8601 time (e.g. 2026-11-26T07:15:03Z)") from None
    if value.tzinfo is None:
        raise ConfigurationError(f"{value.isoformat()} has no timezone: add Z or an offset")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def live_at(entries: Iterable[Record], when: str | datetime, *, model: str) -> LiveAt:
    """What was live at ``when``, from the entries of one ledger (all endpoints of ``model``)."""
    moment = ledger_time(when)
    upto = _until(entries, moment)
    state = replay(e for e in upto if e.subject.get("model") == model)
    versions: dict[tuple[str, str], str] = {}
    split: dict[tuple[str, str], tuple[int, int, Ref]] = {}
    by_seq = {e.seq: e for e in upto}
    for entry in upto:
        endpoint = str(entry.subject.get("endpoint", ""))
        if entry.kind == "deployment_created" and entry.subject.get("model") == model:
            key = (endpoint, str(entry.subject["deployment"]))
            versions[key] = str(entry.subject["version"])
            split[key] = (0, 0, Ref.of(entry))
        elif entry.kind == "deployment_deleted":
            key = (endpoint, str(entry.subject.get("deployment")))
            versions.pop(key, None)
            split.pop(key, None)
        elif entry.kind == "traffic_change":
            after = entry.evidence.get("after", {})
            traffic, mirror = after.get("traffic", {}), after.get("mirror", {})
            for key in [k for k in split if k[0] == endpoint]:
                new = (int(traffic.get(key[1], 0)), int(mirror.get(key[1], 0)))
                if new != split[key][:2]:
                    split[key] = (*new, Ref.of(entry))
    live = []
    for key in sorted(versions):
        weight, mirror, since = split[key]
        live.append(
            LiveDeployment(
                key[0], key[1], versions[key], weight, mirror, since, _approval(state, versions[key], by_seq)
            )
        )
    return LiveAt(moment, state.champion, state.champion_by, tuple(live))


def _until(entries: Iterable[Record], moment: str) -> list[Record]:
    out = []
    for entry in entries:
        if entry.time > moment:
            break
        out.append(entry)
    return out


def _approval(state, version: str, by_seq: dict[int, Record]) -> Approval | None:
    ref = state.approvals.get(version)
    if ref is None:
        return None
    entry = by_seq[ref.seq]
    gate_seq = entry.evidence.get("gate_seq")
    if gate_seq is None and version in state.gates and entry.kind == "promotion":
        gate_seq = state.gates[version].seq  # old promotions named their gate in words only
    gate = by_seq.get(gate_seq) if isinstance(gate_seq, int) else None
    summary = gate.evidence.get("summary") if gate else entry.evidence.get("gate")
    return Approval(ref, entry.evidence.get("reason"), gate_seq, summary)
