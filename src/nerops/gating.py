"""Run the gate: measure challenger and champion on the fixed test set, decide, record.

Both models predict every test CV in the same run, interleaved (the order alternates per
document), so the latency ratio compares like with like on a shared, noisy machine.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from nerops.data import LABELS, Document
from nerops.evaluation import doc_counts, paired_bootstrap_diff, score
from nerops.gate import GateEvidence, GatePolicy, GateResult, ModelScores, decide
from nerops.governance import Governance
from nerops.model.personal import PersonalStrings, audit_folder
from nerops.model.pipeline import Extractor


@dataclass
class Measured:
    predictions: list[list[tuple[int, int, str]]]
    latencies_ms: list[float]


def measure(models: Sequence[Extractor], docs: Sequence[Document]) -> list[Measured]:
    """Predict every document with every model, alternating the order per document."""
    out = [Measured([], []) for _ in models]
    for i, doc in enumerate(docs):
        order = list(range(len(models)))
        if i % 2:
            order.reverse()
        for k in order:
            started = time.perf_counter()
            entities = models[k].predict(doc.text)
            out[k].latencies_ms.append(1000 * (time.perf_counter() - started))
            out[k].predictions.append([(e["start"], e["end"], e["label"]) for e in entities])
    return out


def _scores(version: str, report: dict, latencies: list[float]) -> ModelScores:
    return ModelScores(
        version=version,
        micro_f1=report["micro"]["f1"],
        per_label_f1={label: report["per_label"][label]["f1"] for label in LABELS},
        median_latency_ms=round(statistics.median(latencies), 2) if latencies else 0.0,
    )


def run_gate(
    gov: Governance,
    version: str,
    docs: Sequence[Document],
    policy: GatePolicy,
    *,
    test_sha256: str,
    personal: PersonalStrings | None,
) -> tuple[GateResult, dict[str, object]]:
    """Gate ``version`` against the current champion (the ledger's); write the decision to the ledger and tags.

    Fails closed: a registry failure raises (a transient error) and never turns into "no champion".
    ``personal`` is the training set's personal strings: the challenger's files are audited for
    them (counts only reach the evidence); with None the audit cannot run and the gate fails.
    """
    challenger_version = gov.resolve(version)
    champion_version = gov.state().champion
    if champion_version == challenger_version:
        champion_version = None
    with tempfile.TemporaryDirectory(prefix="nerops-gate-") as tmp:
        folder = gov.check_lineage(challenger_version, Path(tmp))
        audit = audit_folder(folder, personal) if personal is not None else None
        models = [Extractor.load(folder)]
    if champion_version:
        models.append(gov.load(champion_version))
    measured = measure(models, docs)
    gold = [[(s.start, s.end, s.label) for s in doc.spans] for doc in docs]
    reports = [
        score(gold, m.predictions, bootstrap_samples=policy.bootstrap_samples, seed=policy.seed) for m in measured
    ]
    challenger = _scores(challenger_version, reports[0], measured[0].latencies_ms)
    champion = _scores(champion_version, reports[1], measured[1].latencies_ms) if champion_version else None
    diff = ci = None
    if champion_version:
        per_doc = [[doc_counts(g, p) for g, p in zip(gold, m.predictions, strict=True)] for m in measured]
        diff, low, high = paired_bootstrap_diff(
            per_doc[0], per_doc[1], samples=policy.bootstrap_samples, seed=policy.seed
        )
        ci = (low, high)
    evidence = GateEvidence(challenger, champion, len(docs), diff, ci, audit.total if audit else None)
    result = decide(evidence, policy)
    details: dict[str, object] = {
        "test_set": {"documents": len(docs), "sha256": test_sha256},
        "policy": {**asdict(policy), "min_label_f1": dict(policy.min_label_f1)},
        "checks": [asdict(check) for check in result.checks],
        "challenger": {"version": challenger_version, "micro": reports[0]["micro"], **_brief(challenger)},
        "champion": {"version": champion_version, "micro": reports[1]["micro"], **_brief(champion)}
        if champion
        else None,
        "f1_diff": diff,
        "f1_diff_ci95": list(ci) if ci else None,
        "privacy_audit": {k: v for k, v in audit.as_dict().items() if k != "folder"} if audit else None,
    }
    gov.record_gate(result, details)
    return result, details


def _brief(scores: ModelScores) -> dict[str, object]:
    return {"per_label_f1": dict(scores.per_label_f1), "median_latency_ms": scores.median_latency_ms}
