"""The champion/challenger gate: ``decide(evidence, policy) -> GateResult``. Pure: no I/O, no clock.

Checks, each with its value, threshold and a sentence:

- ``min_micro_f1``      challenger micro F1 on the fixed test set >= the policy's minimum;
- ``min_label_f1:<L>``  per-label F1 >= that label's minimum;
- ``non_inferiority``   lower bound of the 95 % paired bootstrap interval of (challenger - champion)
                        micro F1 > -margin (skipped, and said so, when there is no champion);
- ``latency``           median per-document prediction time, both models timed interleaved in the
                        same run, challenger / champion <= the allowed ratio;
- ``privacy_audit``     no personal string of the training set (e-mail, phone, URL, name) in the
                        challenger's model files (:mod:`nerops.model.personal`); fails when the
                        audit did not run.

A failed gate is a value with readable reasons, not an exception.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from nerops.data import LABELS

DEFAULT_LABEL_MINIMA: Mapping[str, float] = {"Email Address": 0.80}


@dataclass(frozen=True)
class GatePolicy:
    min_micro_f1: float = 0.40
    min_label_f1: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_LABEL_MINIMA))
    default_min_label_f1: float = 0.10
    noninferiority_margin: float = 0.02
    max_latency_ratio: float = 1.5
    bootstrap_samples: int = 1000
    seed: int = 0

    def label_minimum(self, label: str) -> float:
        return self.min_label_f1.get(label, self.default_min_label_f1)


@dataclass(frozen=True)
class ModelScores:
    """One model's figures on the fixed test set."""

    version: str
    micro_f1: float
    per_label_f1: Mapping[str, float]
    median_latency_ms: float


@dataclass(frozen=True)
class GateEvidence:
    challenger: ModelScores
    champion: ModelScores | None
    documents: int
    f1_diff: float | None = None
    f1_diff_ci95: tuple[float, float] | None = None
    personal_strings: int | None = None
    """Personal strings of the training set found in the challenger's files; None: not audited."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    message: str


@dataclass(frozen=True)
class GateResult:
    passed: bool
    checks: tuple[Check, ...]
    challenger: str
    champion: str | None

    @property
    def reasons(self) -> list[str]:
        """Why it failed (or, on a pass, what was shown), one sentence per check."""
        failed = [check.message for check in self.checks if not check.passed]
        return failed or [check.message for check in self.checks if check.value is not None]

    @property
    def verdict(self) -> str:
        return "pass" if self.passed else "fail"

    def summary(self) -> str:
        against = f"champion v{self.champion}" if self.champion else "the thresholds alone (no champion yet)"
        head = f"v{self.challenger} {'PASSED' if self.passed else 'FAILED'} the gate against {against}"
        return head + ": " + "; ".join(self.reasons)


def decide(evidence: GateEvidence, policy: GatePolicy) -> GateResult:
    """Judge the challenger; every check runs so the result shows all that is wrong at once."""
    ch = evidence.challenger
    checks = [
        Check(
            "min_micro_f1",
            ch.micro_f1 >= policy.min_micro_f1,
            ch.micro_f1,
            policy.min_micro_f1,
            f"micro F1 {ch.micro_f1:.3f} {'>=' if ch.micro_f1 >= policy.min_micro_f1 else '<'} "
            f"minimum {policy.min_micro_f1:.2f}",
        )
    ]
    for label in LABELS:
        value, minimum = ch.per_label_f1.get(label, 0.0), policy.label_minimum(label)
        if value < minimum:
            checks.append(
                Check(f"min_label_f1:{label}", False, value, minimum, f"{label} F1 {value:.3f} < minimum {minimum:.2f}")
            )
    low_labels = sum(1 for check in checks if check.name.startswith("min_label_f1:"))
    if not low_labels:
        checks.append(Check("min_label_f1", True, None, None, "every label meets its minimum F1"))
    checks += _champion_checks(evidence, policy)
    checks.append(_privacy_check(evidence.personal_strings))
    return GateResult(
        passed=all(check.passed for check in checks),
        checks=tuple(checks),
        challenger=ch.version,
        champion=evidence.champion.version if evidence.champion else None,
    )


def _privacy_check(found: int | None) -> Check:
    if found is None:
        return Check("privacy_audit", False, None, 0, "the model files were not audited for personal data")
    if found:
        message = f"{found} personal strings of the training set in the model files: refused"
        return Check("privacy_audit", False, found, 0, message)
    return Check("privacy_audit", True, 0, 0, "no personal string of the training set in the model files")


def _champion_checks(evidence: GateEvidence, policy: GatePolicy) -> list[Check]:
    champion, ch = evidence.champion, evidence.challenger
    if champion is None:
        return [Check("non_inferiority", True, None, None, "no champion yet: the thresholds alone decide")]
    if evidence.f1_diff_ci95 is None or evidence.f1_diff is None:
        return [Check("non_inferiority", False, None, -policy.noninferiority_margin, "no paired comparison given")]
    low, high = evidence.f1_diff_ci95
    bound = -policy.noninferiority_margin
    ok = low > bound
    checks = [
        Check(
            "non_inferiority",
            ok,
            low,
            bound,
            f"F1 difference vs champion v{champion.version} {evidence.f1_diff:+.3f} "
            f"(95 % CI {low:+.3f} to {high:+.3f} over {evidence.documents} CVs): lower bound "
            f"{'above' if ok else 'not above'} the allowed {bound:+.3f}",
        )
    ]
    if champion.median_latency_ms <= 0:
        checks.append(Check("latency", False, None, policy.max_latency_ratio, "champion latency not measured"))
        return checks
    ratio = ch.median_latency_ms / champion.median_latency_ms
    fast = ratio <= policy.max_latency_ratio
    checks.append(
        Check(
            "latency",
            fast,
            ratio,
            policy.max_latency_ratio,
            f"median latency {ch.median_latency_ms:.1f} ms vs champion {champion.median_latency_ms:.1f} ms: "
            f"ratio {ratio:.2f} {'<=' if fast else '>'} allowed {policy.max_latency_ratio:.2f}",
        )
    )
    return checks
