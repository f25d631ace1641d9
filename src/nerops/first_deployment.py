"""The initial deployment: how the very first model (no champion, no stable arm) becomes champion.

There is nothing to compare it with, so it is judged on three things, all recorded as the evidence of
one ``initial_deployment`` ledger entry (the entry is the champion change):

- readiness: the deployment is up on the endpoint (its workers ready);
- probes: smoke requests pinned to it (by header, not counted in the live split) answer 200 with a
  well-formed entity list, within a latency bound;
- absolute thresholds: its last gate passed against the thresholds alone (no champion then).

``judge`` is pure; ``deploy_first`` drives a local endpoint through its client and records the result.
Probes send a synthetic CV only: no resume text reaches the evidence.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

from nerops.decisions import ModelState
from nerops.errors import PromotionError

PROBES = 3
MAX_PROBE_MS = 5000.0


@dataclass(frozen=True)
class Probe:
    status: int
    entities: int | None  # None: the answer was not a well-formed entity list
    latency_ms: float


@dataclass(frozen=True)
class Judgement:
    passed: bool
    reasons: tuple[str, ...]
    evidence: dict


def judge(
    state: ModelState, version: str, *, ready: bool, probes: list[Probe], max_probe_ms: float = MAX_PROBE_MS
) -> Judgement:
    """May ``version`` become the first champion? Every check runs, so all that is wrong shows at once."""
    reasons = []
    if state.champion is not None:
        reasons.append(f"v{state.champion} is already champion: a new version takes the rollout path")
    if state.stage(version) != "prod":
        reasons.append(f"v{version} is stage={state.stage(version)}: approve it first")
    verdict, against = state.gate_results.get(version, ("never gated", None))
    if verdict != "pass" or against is not None:
        reasons.append(f"v{version}'s last gate is not a pass against the absolute thresholds ({verdict})")
    if not ready:
        reasons.append("the deployment is not ready")
    bad = [p for p in probes if p.status != 200 or p.entities is None or p.latency_ms > max_probe_ms]
    if not probes or bad:
        reasons.append(f"{len(bad)} of {len(probes)} probes failed (status, entity list, or over {max_probe_ms} ms)")
    gate = state.gates.get(version)
    evidence = {
        "readiness": {"ready": ready},
        "probes": [asdict(p) for p in probes],
        "max_probe_ms": max_probe_ms,
        "thresholds": {"gate_seq": gate.seq if gate else None, "verdict": verdict, "against": against},
    }
    return Judgement(not reasons, tuple(reasons), evidence)


def deploy_first(gov, client, version: str, deployment: str, *, endpoint: str, instances: int = 1):
    """Create the deployment, check readiness and probes, give it all traffic, record the initial deployment."""
    from nerops.governance import SYNTHETIC_EXAMPLE

    state = gov.state()
    if state.champion is not None:
        raise PromotionError(f"v{state.champion} is champion: the first deployment has been made")
    current = client.endpoint()
    if deployment not in current["deployments"]:
        client.create_deployment(deployment, version, instance_count=instances)
    ready = client.deployment(deployment).get("ready", 0) >= 1
    probes = []
    for _ in range(PROBES):
        started = time.perf_counter()
        answer = client.score(SYNTHETIC_EXAMPLE, deployment=deployment)
        entities = _entities(answer)
        probes.append(Probe(answer.status_code, entities, round(1000 * (time.perf_counter() - started), 1)))
    judgement = judge(state, version, ready=ready, probes=probes)
    if not judgement.passed:
        raise PromotionError(f"v{version} cannot become the first champion: " + "; ".join(judgement.reasons))
    client.set_traffic({deployment: 100}, mirror={})
    evidence = {**judgement.evidence, "endpoint": endpoint, "deployment": deployment}
    return gov.set_champion(
        version, expected=None, reason="initial deployment", cause="initial_deployment", evidence=evidence
    )


def _entities(answer) -> int | None:
    try:
        body = answer.json()
    except ValueError:
        return None
    entities = body.get("entities") if isinstance(body, dict) else None
    ok = isinstance(entities, list) and all(
        isinstance(e, dict) and {"label", "start", "end"} <= set(e) for e in entities
    )
    return len(entities) if ok else None
