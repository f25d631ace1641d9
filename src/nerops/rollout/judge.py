"""The health judge, pure: ``judge(look, plan) -> Verdict`` (see :mod:`nerops.rollout.verdicts`).

One test per metric for the whole rollout, recomputed from every interval since the rollout started
at each look, so a resumed rollout or an auditor gets the same statistic from the same series. Each
enforced metric spends its share of the plan's ``alpha``; a metric tested both ways (``either``)
spends half on each side; a per-label metric splits its share over the labels.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import numpy as np

from nerops.rollout import sequential as sq
from nerops.rollout.plan import Plan
from nerops.rollout.policy import MetricPolicy
from nerops.rollout.strata import Cell, Index, buckets, counts, moments, query_texts, series_problems
from nerops.rollout.verdicts import Look, MetricEvidence, Status, Verdict, worst
from nerops.telemetry import metrics as m
from nerops.telemetry.durations import format_duration

Test = Callable[[str, float], float]  # (side "up" | "down", bound) -> log e-value at this look


def _last(path: np.ndarray) -> float:
    return float(path[..., -1]) if path.shape[-1] else 0.0


def _mean_scale(data: dict[str, np.ndarray], margin: float) -> float:
    """The alternatives' scale for a mean test: the margin (at least 10 %) of the pooled mean."""
    level = abs(data["sum_s"].sum() / max(data["n_s"].sum(), 1.0)) if "n_s" in data else 0.0
    level = level or abs(data["sum_c"].sum() / max(data["n_c"].sum(), 1.0)) or 1.0
    return max(margin, 0.1) * level


def _tests(metric: MetricPolicy, cells: list[Cell], label: str | None) -> tuple[Test, dict[str, float | None]] | None:
    """The metric's test of "candidate above / below a bound" and the pooled values shown beside it."""
    if metric.kind in ("rate", "agreement") or (metric.kind == "ceiling" and metric.metric is None):
        num, den = (
            (m.AGREEMENT_DOCUMENTS, m.AGREEMENT_DOCUMENTS)
            if metric.kind == "agreement"
            else (metric.numerator or "", metric.denominator or "")
        )
        c = counts(cells, num, den, metric.two_arms)
        if metric.kind == "agreement":
            c["x_c"] = c["e_c"] - counts(cells, m.AGREEMENT_EXACT_DOCUMENTS, num, False)["x_c"]
        shown = _shown(c["x_c"], c["e_c"], c.get("x_s"), c.get("e_s"))
        if metric.kind != "rate":
            return (lambda side, bound: _last(sq.proportion_test(c["x_c"], c["e_c"], bound))), shown

        def rate(side: str, bound: float) -> float:
            if side == "up":
                return _last(sq.ratio_test(c["x_c"], c["e_c"], c["x_s"], c["e_s"], bound))
            return _last(sq.ratio_test(c["x_s"], c["e_s"], c["x_c"], c["e_c"], 1.0 / bound))

        return rate, shown
    if metric.kind == "distribution":
        a, b = buckets(cells, metric.metric or "")

        def rank(side: str, bound: float) -> float:
            d, v = sq.rank_increments(a, b, bound, 1 if side == "up" else -1)
            return _last(sq.mean_test(d, v, 0.1))

        d, v = sq.rank_increments(a, b, 0.5)
        ok = np.isfinite(v) & (v > 0)
        theta = 0.5 + float((d[ok] / v[ok]).sum() / (1 / v[ok]).sum()) if ok.any() else None
        return rank, {
            "candidate": theta,
            "stable": 0.5 if theta is not None else None,
            "candidate_samples": float(a.sum()),
            "stable_samples": float(b.sum()),
        }
    data = moments(cells, metric.metric or "", label, metric.two_arms)
    if data is None:
        return None
    shown = _shown(data["sum_c"], data["n_c"], data.get("sum_s"), data.get("n_s"))
    if metric.kind == "ceiling":
        d, v = sq.one_sample_increments(data["n_c"], data["sum_c"], data["sq_c"], metric.threshold or 0.0)
        return (lambda side, bound: _last(sq.mean_test(d, v, 0.1 * (metric.threshold or 1.0)))), shown
    scale = _mean_scale(data, metric.margin)

    def mean(side: str, bound: float) -> float:
        d, v = sq.mean_increments(
            data["n_c"],
            data["sum_c"],
            data["sq_c"],
            data["n_s"],
            data["sum_s"],
            data["sq_s"],
            bound,
            1 if side == "up" else -1,
        )
        return _last(sq.mean_test(d, v, scale))

    return mean, shown


def _shown(x_c: np.ndarray, n_c: np.ndarray, x_s: np.ndarray | None, n_s: np.ndarray | None) -> dict[str, float | None]:
    def ratio(x: np.ndarray | None, n: np.ndarray | None) -> float | None:
        return float(x.sum() / n.sum()) if x is not None and n is not None and n.sum() else None

    return {
        "candidate": ratio(x_c, n_c),
        "stable": ratio(x_s, n_s),
        "candidate_samples": float(n_c.sum()),
        "stable_samples": float(n_s.sum()) if n_s is not None else None,
    }


def _entity_agreement(cells: list[Cell]) -> str:
    """The entity-level agreement of the pairs compared (every label): shown beside the document-level test."""
    kinds = {m.AGREEMENT_MATCHED: 0.0, m.AGREEMENT_CANDIDATE_ONLY: 0.0, m.AGREEMENT_REFERENCE_ONLY: 0.0}
    for cell in cells:
        for (name, _label), agg in cell.candidate.values.items():
            if name in kinds:
                kinds[name] += agg.sum
    both, mine, theirs = kinds.values()
    if not both + mine + theirs:
        return ""
    f1 = 2 * both / (2 * both + mine + theirs)
    return f"; entity-level agreement F1 {f1:.3f} ({both:g} in both, {mine:g} candidate only, {theirs:g} stable only)"


def _bounds(metric: MetricPolicy) -> list[tuple[str, float, str, float]]:
    """Per tested side: (worse side, its bound, equivalence side, its bound)."""
    mg = metric.margin
    if metric.kind in ("agreement", "ceiling"):
        return [("up", metric.threshold or 0.0, "down", metric.threshold or 0.0)]
    centre = 0.5 if metric.kind == "distribution" else 1.0
    higher = ("up", centre + mg, "down", centre + mg)
    lower = ("down", centre - mg, "up", centre - mg)
    return {"higher": [higher], "lower": [lower], "either": [higher, lower]}[metric.direction]


def _tested(metric: MetricPolicy, side: str, bound: float) -> str:
    op = ">" if side == "up" else "<"
    if metric.kind == "distribution":
        return f"P(candidate {'larger' if side == 'up' else 'smaller'}) {op} {bound:g}"
    if metric.two_arms:
        return f"candidate {op} {bound:g} x stable"
    return f"candidate {op} {bound:g}"


def evaluate(metric: MetricPolicy, index: Index, plan: Plan) -> Iterator[MetricEvidence]:
    """The metric's evidence at this look: one per label for a per-label metric."""
    cells = list(index.cells(metric))
    labels: list[str | None] = list(index.labels(metric)) if metric.per_label else [None]
    sides = _bounds(metric)
    alpha = plan.alpha_of(metric) / len(sides) / max(len(labels), 1)
    limit = sq.threshold(alpha)
    strata = sum(1 for c in cells if c.candidate.requests or c.candidate.documents)
    for label in labels:
        name = f"{metric.name}[{label}]" if label is not None else metric.name
        built = _tests(metric, cells, label)
        base = {
            "metric": name,
            "kind": metric.kind,
            "mode": metric.mode,
            "threshold": math.exp(limit),
            "alpha": alpha,
            "margin": metric.margin,
            "min_samples": metric.min_samples,
            "strata": strata,
            "traffic": tuple(metric.traffic),
        }
        if built is None:
            yield MetricEvidence(
                tested="",
                status="error",
                e_value=1.0,
                candidate_samples=0,
                stable_samples=None,
                candidate=None,
                stable=None,
                reason=f"{name}: the source keeps no sums of squares for this metric: a mean test cannot run",
                **base,
            )
            continue
        test, shown = built
        extra = _entity_agreement(cells) if metric.kind == "agreement" else ""
        few = shown["candidate_samples"] < metric.min_samples or (
            metric.two_arms and (shown["stable_samples"] or 0.0) < metric.min_samples
        )
        measured = index.measured_now(metric)
        for worse, bound, equal, equal_bound in sides:
            log_e = test(worse, bound)
            equivalence = math.exp(min(test(equal, equal_bound), 700.0)) if metric.require_equivalence else None
            tested = _tested(metric, worse, bound)
            e_value, bar = math.exp(min(log_e, 700.0)), math.exp(limit)
            status: Status = "healthy"
            if few and not measured:
                reason = f"{name}: not measured in this step (reads {', '.join(metric.traffic)})"
            elif few:
                count = f"{shown['candidate_samples']:g} candidate / {shown['stable_samples'] or 0:g} stable samples"
                status, reason = "no_data", f"{name}: {count}, fewer than the minimum {metric.min_samples} per arm"
            elif log_e >= limit:
                status, reason = "unhealthy", f"{name}: {tested} (e-value {e_value:.3g} >= {bar:.3g})"
            elif equivalence is not None and equivalence < bar:
                status, reason = "inconclusive", f"{name}: within the margin not shown yet (e-value {equivalence:.3g})"
            else:
                reason = f"{name}: not shown {tested} (e-value {e_value:.3g} < {bar:.3g})"
            yield MetricEvidence(
                tested=tested,
                status=status,
                reason=reason + extra,
                e_value=e_value,
                equivalence_e_value=equivalence,
                **shown,
                **base,
            )  # type: ignore[arg-type]


def hard_failures(look: Look, index: Index, plan: Plan) -> list[str]:
    """The hard-failure rules that fired: no statistics, they act at once."""
    fired: list[str] = []
    last_end = index.intervals[-1][1] if index.intervals else look.now
    for rule in plan.hard_failures:
        if rule.kind == "restarts":
            if look.candidate_down:
                fired.append(f"{rule.name}: the candidate deployment is down ({look.candidate_down})")
            elif look.candidate_restarts >= rule.at_least:
                fired.append(
                    f"{rule.name}: the candidate's workers restarted {look.candidate_restarts} times "
                    f"since the rollout began (at least {rule.at_least:g})"
                )
            continue
        bad = total = 0.0
        for start, end in index.intervals:
            if end <= last_end - rule.window:
                continue
            for cls in set(rule.traffic) & set(look.series):
                row = index.row(cls, look.candidate, start, end)
                bad, total = bad + row.total(rule.numerator or ""), total + row.total(rule.denominator or "")
        if total >= rule.min_samples and bad >= rule.at_least * total:
            fired.append(
                f"{rule.name}: {bad:g} of {total:g} {rule.denominator} ({bad / total:.0%}) in the last "
                f"{format_duration(rule.window)}, at least {rule.at_least:.0%}"
            )
    return fired


def judge(look: Look, plan: Plan) -> Verdict:
    """The verdict of one look, with the evidence of every metric and rule."""
    index = Index(look)
    problems = series_problems(look)
    evidence = tuple(e for metric in plan.metrics for e in evaluate(metric, index, plan))
    fired = hard_failures(look, index, plan)
    enforced = [e for e in evidence if e.mode == "enforce"]
    statuses: list[Status] = [e.status for e in enforced]
    if fired:
        statuses.append("unhealthy")
    if problems:
        statuses.append("error")
    baking = look.now < look.wait_until
    if baking:
        statuses.append("inconclusive")
    status = worst(statuses)
    window = (index.intervals[0][0], index.intervals[-1][1]) if index.intervals else None
    if status == "unhealthy":
        reason = "; ".join(fired + [e.reason for e in enforced if e.status == "unhealthy"])
    elif status == "error":
        reason = "; ".join(problems) + " (traffic frozen: an outage of the metrics is not a verdict on the model)"
    elif status == "no_data":
        reason = "; ".join(e.reason for e in enforced if e.status == "no_data")
    elif status == "inconclusive":
        until = datetime.fromtimestamp(look.wait_until, UTC).strftime("%H:%M:%SZ")
        waiting = [f"minimum bake until {until} ({format_duration(round(look.wait_until - look.now))} left)"]
        reason = "; ".join((waiting if baking else []) + [e.reason for e in enforced if e.status == "inconclusive"])
    else:
        reason = f"{len(enforced)} enforced metric(s) healthy; no hard failure"
    return Verdict(
        status, reason, look.now, window, plan.interval, evidence, tuple(fired), tuple(problems), query_texts(look)
    )
