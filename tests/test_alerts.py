"""Alert rules: the pure judge as a table, evaluation on synthetic telemetry with chosen timestamps, the rules
file's validation, the text table, and the KQL compilation."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from nerops.telemetry import Point, TelemetryStore, TelemetryStoreError
from nerops.telemetry.alerts import (
    Measured,
    Rule,
    RulesError,
    assess,
    default_rules_path,
    evaluate,
    format_duration,
    format_results,
    load_rules,
    parse_duration,
    parse_rules,
    standalone,
)
from nerops.telemetry.kql import KqlError, scheduled_query_rule, to_kql
from nerops.telemetry.source import Watermark

NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
MIN = 60.0
HOUR = 3600.0
LABELS = {"Name": 1, "Skills": 6, "Email Address": 1}


def traffic(
    store: TelemetryStore,
    deployment: str,
    start: float,
    end: float,
    *,
    every: float = MIN,
    requests: int = 30,
    latency_ms: float = 50.0,
    server_errors: int = 0,
    entities: int = 8,
    labels: dict[str, int] | None = None,
    empty: int = 0,
    traffic_class: str = "live",
) -> None:
    """One export per ``every`` seconds in ``(start, end]``: requests, latency, errors and per-document signals."""
    labels = LABELS if labels is None else labels
    identity = {"endpoint": "resume-ner", "deployment": deployment, "model_version": "7"}
    identity["traffic_class"] = traffic_class
    points = []
    t = start + every
    while t <= end + 1e-6:
        scored = requests - empty
        points += [
            Point.histogram(t, "inference_latency_ms", [latency_ms] * requests, interval_s=every, **identity),
            Point.counter(t, "request_count", requests, interval_s=every, **identity),
            Point.histogram(t, "entities_detected_count", [0] * empty + [entities] * scored, **identity),
            Point.counter(t, "document_count", requests, **identity),
            Point.histogram(t, "input_length_chars", [3000] * requests, **identity),
        ]
        if server_errors:
            points.append(Point.counter(t, "server_error_count", server_errors, **identity))
        if empty:
            points.append(Point.counter(t, "empty_prediction_count", empty, **identity))
        points += [
            Point.counter(t, "entities_per_label", n * scored, label=label, **identity)
            for label, n in labels.items()
            if n
        ]
        t += every
    store.write(points)


def complete_until(store: TelemetryStore, end: float) -> None:
    """A writer's watermark at ``end``: everything before it is in the store (the tests write it directly)."""
    store.write([], watermark=Watermark("test-writer", "resume-ner", end, started=0.0))


@pytest.fixture
def store(tmp_path: Path):
    with TelemetryStore(tmp_path / "telemetry.db", retention_days=None) as store:
        complete_until(store, NOW)
        yield store


@pytest.fixture(scope="module")
def rules() -> dict[str, Rule]:
    return {rule.name: rule for rule in load_rules()}


def by_key(results):
    return {(r.rule, r.deployment, r.label): r for r in results}


# ---------------------------------------------------------------------------------------------- the judge


def rule(**overrides) -> Rule:
    spec = {
        "name": "r",
        "description": "a rule",
        "signal": "system",
        "metric": "inference_latency_ms",
        "aggregation": "mean",
        "window": "5m",
        "for": "10m",
        "min_samples": 20,
        "condition": {"op": ">", "factor": 2.0, "baseline": {"window": "1h", "offset": "1h"}},
    }
    spec.update(overrides)
    return Rule.model_validate(spec)


RELATIVE = rule()
ABSOLUTE = rule(condition={"op": ">", "threshold": 5}, aggregation="rate", metric=None,
                numerator="server_error_count", denominator="request_count")  # fmt: skip
DROP = rule(condition={"op": "<", "factor": 0.5, "baseline": {"window": "1h"}})
DROP_OR_HALF = rule(condition={"op": "<=", "factor": 0.5, "baseline": {"window": "1h"}})


def m(value, samples=100):
    return Measured(value, samples)


@pytest.mark.parametrize(
    ("case", "steps", "baseline", "the_rule", "state", "threshold"),
    [
        ("doubled+ in every step", [m(120), m(130)], m(50), RELATIVE, "firing", 100.0),
        ("exactly 2x is not > 2x", [m(100), m(100)], m(50), RELATIVE, "ok", 100.0),
        ("a one-step spike", [m(50), m(300)], m(50), RELATIVE, "ok", 100.0),
        ("an old spike, now back", [m(300), m(50)], m(50), RELATIVE, "ok", 100.0),
        ("steady", [m(51), m(49)], m(50), RELATIVE, "ok", 100.0),
        ("too few samples in one step", [m(300, 5), m(300)], m(50), RELATIVE, "no_data", 100.0),
        ("too few samples everywhere", [m(300, 5), m(300, 5)], m(50), RELATIVE, "no_data", 100.0),
        ("a known step that does not hold wins over an unknown one", [m(300, 5), m(50)], m(50), RELATIVE, "ok", 100.0),
        ("no value in a step", [m(None, 0), m(300)], m(50), RELATIVE, "no_data", 100.0),
        ("baseline too thin", [m(300), m(300)], m(50, 19), RELATIVE, "no_data", None),
        ("no baseline at all", [m(300), m(300)], None, RELATIVE, "no_data", None),
        ("exactly min_samples is enough", [m(300, 20), m(300, 20)], m(50, 20), RELATIVE, "firing", 100.0),
        ("absolute above", [m(6.0), m(9.5)], None, ABSOLUTE, "firing", 5.0),
        ("absolute at the threshold", [m(5.0), m(9.5)], None, ABSOLUTE, "ok", 5.0),
        ("absolute ignores any baseline", [m(6.0), m(9.5)], m(0.0), ABSOLUTE, "firing", 5.0),
        ("a drop below half", [m(3.9), m(4.0)], m(10), DROP, "firing", 5.0),
        ("a drop to half exactly is not < half", [m(5.0), m(4.0)], m(10), DROP, "ok", 5.0),
        ("... but is <= half", [m(5.0), m(4.0)], m(10), DROP_OR_HALF, "firing", 5.0),
        ("no steps", [], m(10), DROP, "no_data", None),
    ],
)
def test_assess(case, steps, baseline, the_rule, state, threshold):
    judgement = assess(steps, baseline, the_rule)
    assert judgement.state == state, (case, judgement.reason)
    assert judgement.threshold == threshold
    if threshold is None:  # nothing to compare with: every step unknown
        assert (judgement.held, judgement.failed, judgement.short) == (0, 0, len(steps))
    else:
        assert judgement.held + judgement.failed + judgement.short == len(steps)
    assert judgement.reason


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30), ("5m", 300), ("1h", 3600), ("1d", 86400), ("1h30m", 5400), ("250ms", 0.25), (" 2 m ", 120), (0, 0)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds
    assert parse_duration(format_duration(seconds)) == seconds


# ------------------------------------------------------------------------------------ evaluation on a store


def test_steady_traffic_is_ok_everywhere(store, rules):
    for deployment in ("blue", "green"):
        traffic(store, deployment, NOW - 3 * HOUR, NOW)
    results = evaluate(rules.values(), store, now=NOW, reference="blue")
    assert {r.state for r in results} == {"ok"}
    assert {r.deployment for r in results} == {"blue", "green"}
    per_label = [r for r in results if r.rule == "entities-drop-per-label"]
    assert sorted(r.label for r in per_label) == sorted(list(LABELS) * 2)
    assert len({r.rule for r in results}) == len(rules)  # every rule, the reference ones included


def test_latency_more_than_doubled_for_the_whole_duration_fires_with_its_evidence(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW - 10 * MIN)
    traffic(store, "blue", NOW - 10 * MIN, NOW, latency_ms=125.0)
    traffic(store, "green", NOW - 3 * HOUR, NOW)
    results = by_key(evaluate([rules["latency-increase"]], store, now=NOW))
    assert results[("latency-increase", "green", "")].state == "ok"
    fired = results[("latency-increase", "blue", "")]
    assert fired.state == "firing"
    assert fired.value == pytest.approx(125.0)
    assert fired.baseline == pytest.approx(50.0)
    assert fired.threshold == pytest.approx(100.0)
    assert fired.samples == 5 * 30 and fired.min_samples == 20
    assert (fired.window_start, fired.window_end) == (NOW - 10 * MIN, NOW)
    # the baseline is the endpoint's hour before (blue and green together), not blue's own
    assert (fired.baseline_start, fired.baseline_end, fired.baseline_samples) == (NOW - 2 * HOUR, NOW - HOUR, 3600)
    assert fired.baseline_deployment == "(endpoint)"
    assert [(s.start, s.end, s.held) for s in fired.steps] == [
        (NOW - 10 * MIN, NOW - 5 * MIN, True),
        (NOW - 5 * MIN, NOW, True),
    ]
    assert fired.for_s == 600 and "2 step(s) of 5m" in fired.for_check and "held 2" in fired.for_check
    assert "FROM system_points" in fired.query and "p.metric IN ('inference_latency_ms'" in fired.query
    assert f"p.time > {NOW - 10 * MIN!r} AND p.time <= {NOW!r}" in fired.query  # parameters shown in place
    assert "FROM watermarks" in fired.query and "FROM telemetry_loss" in fired.query  # completeness, as evidence
    assert "125" in fired.message and "100" in fired.message and "50" in fired.message
    assert fired.to_dict()["steps"][0]["held"] is True


def test_a_short_latency_spike_does_not_fire(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW - 5 * MIN)
    traffic(store, "blue", NOW - 5 * MIN, NOW, latency_ms=400.0)  # one step of 5m out of the 10m
    [result] = evaluate([rules["latency-increase"]], store, now=NOW)
    assert result.state == "ok"
    assert [s.held for s in result.steps] == [False, True]
    assert result.value == pytest.approx(400.0)


def test_traffic_under_the_minimum_sample_count_gives_no_data_not_firing(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW - 10 * MIN, requests=30)
    # 3 requests per minute for the last 10 minutes: 15 per 5-minute step, below min_samples 20
    traffic(store, "blue", NOW - 10 * MIN, NOW, requests=3, latency_ms=900.0, server_errors=3, entities=0, empty=3)
    results = by_key(evaluate(rules.values(), store, now=NOW))
    for name in ("latency-increase", "error-rate", "entities-drop"):
        result = results[(name, "blue", "")]
        assert result.state == "no_data", result.message
        assert result.samples == 15
        assert "fewer than 20 samples" in result.message
    assert results[("empty-predictions", "blue", "")].state == "firing"  # 30 documents in its 10m window, >= 20


def test_a_new_deployment_without_history_has_no_baseline(store, rules):
    traffic(store, "canary", NOW - 10 * MIN, NOW, latency_ms=500.0)
    [result] = evaluate([rules["latency-increase"]], store, now=NOW)
    assert result.state == "no_data"
    assert "baseline has 0 samples" in result.message


def test_error_rate_over_the_threshold_fires_and_a_short_burst_does_not(store, rules):
    traffic(store, "blue", NOW - HOUR, NOW - 10 * MIN)
    traffic(store, "blue", NOW - 10 * MIN, NOW, server_errors=3)  # 10 % of 30 requests per minute
    traffic(store, "green", NOW - HOUR, NOW - 5 * MIN)
    traffic(store, "green", NOW - 5 * MIN, NOW, server_errors=30)  # 100 %, but only for 5 minutes
    results = by_key(evaluate([rules["error-rate"]], store, now=NOW))
    blue, green = results[("error-rate", "blue", "")], results[("error-rate", "green", "")]
    assert (blue.state, blue.value, blue.threshold) == ("firing", pytest.approx(10.0), 5.0)
    assert blue.baseline is None and blue.baseline_start is None
    assert "server_error_count" in blue.query and "request_count" in blue.query
    assert (green.state, green.value) == ("ok", pytest.approx(100.0))


def test_a_halving_of_entities_per_resume_fires_overall_and_for_the_label_that_dropped(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW - 20 * MIN)
    # 50 % fewer entities per resume for the last 20 minutes, all of it in "Skills" (6 -> 2 per resume)
    traffic(store, "blue", NOW - 20 * MIN, NOW, entities=4, labels={"Name": 1, "Skills": 2, "Email Address": 1})
    traffic(store, "green", NOW - 3 * HOUR, NOW)
    results = by_key(evaluate([rules["entities-drop"], rules["entities-drop-per-label"]], store, now=NOW))
    overall = results[("entities-drop", "blue", "")]
    assert (overall.state, overall.value, overall.baseline) == ("firing", pytest.approx(4.0), pytest.approx(8.0))
    assert "FROM model_points" in overall.query
    skills = results[("entities-drop-per-label", "blue", "Skills")]
    assert (skills.state, skills.value, skills.baseline) == ("firing", pytest.approx(2.0), pytest.approx(6.0))
    assert skills.samples == 10 * 30  # documents in the latest 10-minute step
    assert "label" in skills.query and "document_count" in skills.query
    for label in ("Name", "Email Address"):
        assert results[("entities-drop-per-label", "blue", label)].state == "ok"
    assert {r.state for (_, dep, _), r in results.items() if dep == "green"} == {"ok"}


def test_a_label_that_vanished_entirely_is_judged(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW - 20 * MIN)
    traffic(store, "blue", NOW - 20 * MIN, NOW, labels={"Name": 1, "Skills": 6})  # no e-mail addresses any more
    results = by_key(evaluate([rules["entities-drop-per-label"]], store, now=NOW))
    email = results[("entities-drop-per-label", "blue", "Email Address")]
    assert (email.state, email.value) == ("firing", 0.0)


def test_reference_baseline_compares_a_canary_with_the_stable_deployment(store):
    canary_rule = rule(condition={"op": ">", "factor": 1.5, "baseline": {"window": "10m", "deployment": "reference"}})
    traffic(store, "stable", NOW - 20 * MIN, NOW, latency_ms=50.0)
    traffic(store, "canary", NOW - 20 * MIN, NOW, latency_ms=90.0, requests=5)
    results = by_key(evaluate([canary_rule], store, now=NOW, reference="stable"))
    canary = results[("r", "canary", "")]
    assert (canary.state, canary.baseline, canary.baseline_deployment) == ("firing", pytest.approx(50.0), "stable")
    assert (canary.baseline_start, canary.baseline_end) == (NOW - 10 * MIN, NOW)
    assert results[("r", "stable", "")].state == "ok"
    [error] = evaluate([canary_rule], store, now=NOW)  # without a reference: an error, not an exception
    assert error.state == "error" and "reference" in error.message


REFERENCE_RULES = ("latency-vs-reference", "error-rate-vs-reference", "entities-vs-reference",
                   "entities-per-label-vs-reference", "empty-rate-vs-reference")  # fmt: skip


@pytest.mark.parametrize(("latency", "fires"), [(100.0, True), (50.0, False)])
def test_reference_rules_judge_a_candidate_from_its_first_minutes(store, rules, latency, fires):
    """A candidate only 5 minutes old, against the stable deployment in the same window."""
    traffic(store, "stable", NOW - 3 * HOUR, NOW, latency_ms=50.0)
    traffic(store, "candidate", NOW - 10 * MIN, NOW, latency_ms=latency)  # doubled, or identical
    chosen = [rules[name] for name in REFERENCE_RULES]
    results = by_key(evaluate(chosen, store, now=NOW, reference="stable"))
    latency_rule = results[("latency-vs-reference", "candidate", "")]
    assert latency_rule.state == ("firing" if fires else "ok"), latency_rule.message
    assert latency_rule.baseline == pytest.approx(50.0) and latency_rule.baseline_deployment == "stable"
    assert (latency_rule.baseline_start, latency_rule.baseline_end) == (NOW - 5 * MIN, NOW)  # the same window
    others = {key: r.state for key, r in results.items() if key[0] != "latency-vs-reference"}
    assert set(others.values()) == {"ok"}, others  # same errors, entities, labels and empty rate as stable
    # the self-comparing rule has nothing to say yet: the candidate has no hour before ... but the endpoint has
    [endpoint_baseline] = evaluate([rules["latency-increase"]], store, now=NOW, deployments=["candidate"])
    assert endpoint_baseline.state == "ok" and endpoint_baseline.baseline == pytest.approx(50.0)


def test_reference_rules_catch_errors_entities_labels_and_empty_answers(store, rules):
    traffic(store, "stable", NOW - HOUR, NOW, server_errors=0, entities=8)
    traffic(store, "candidate", NOW - HOUR, NOW, server_errors=3, entities=4, labels={"Name": 1, "Skills": 2}, empty=9)
    results = by_key(evaluate([rules[name] for name in REFERENCE_RULES], store, now=NOW, reference="stable"))
    assert results[("error-rate-vs-reference", "candidate", "")].state == "firing"  # 10 % > 2 x 0 % + 2
    assert results[("entities-vs-reference", "candidate", "")].state == "firing"
    assert results[("entities-per-label-vs-reference", "candidate", "Email Address")].state == "firing"  # vanished
    assert results[("entities-per-label-vs-reference", "candidate", "Name")].state == "ok"
    assert results[("empty-rate-vs-reference", "candidate", "")].state == "firing"  # 30 % > 2 x 0 % + 5
    assert {r.state for (_, dep, _), r in results.items() if dep == "stable"} == {"ok"}


def test_rules_read_live_traffic_by_default_and_other_classes_when_they_say_so(store):
    traffic(store, "green", NOW - 10 * MIN, NOW, latency_ms=500.0, traffic_class="mirror")
    traffic(store, "green", NOW - 10 * MIN, NOW, latency_ms=20.0)
    traffic(store, "green", NOW - 10 * MIN, NOW, latency_ms=80.0, traffic_class="probe")
    traffic(store, "green", NOW - 10 * MIN, NOW, latency_ms=1000.0, traffic_class="smoke")
    over_100 = {"op": ">", "threshold": 100}
    [live] = evaluate([rule(condition=over_100)], store, now=NOW)
    [mirror] = evaluate([rule(traffic="mirror", condition=over_100)], store, now=NOW)
    [probe_and_live] = evaluate([rule(traffic=["live", "probe"], condition=over_100)], store, now=NOW)
    [everything] = evaluate([rule(traffic="all", condition=over_100)], store, now=NOW)
    assert (live.state, live.value, live.traffic) == ("ok", pytest.approx(20.0), ("live",))
    assert (mirror.state, mirror.value) == ("firing", pytest.approx(500.0))
    assert (probe_and_live.state, probe_and_live.value) == ("ok", pytest.approx(50.0))
    assert (everything.state, everything.value) == ("firing", pytest.approx(400.0))
    assert "traffic_class IN ('live', 'probe')" in probe_and_live.query
    with pytest.raises(ValueError, match="traffic"):
        rule(traffic="shadow")


def test_p95_rules_use_the_buckets(store):
    p95 = rule(aggregation="p95", condition={"op": ">", "threshold": 1000})
    traffic(store, "blue", NOW - 10 * MIN, NOW, latency_ms=20.0, requests=95)
    traffic(store, "blue", NOW - 10 * MIN, NOW, latency_ms=3000.0, requests=6)
    [result] = evaluate([p95], store, now=NOW)
    assert result.state == "firing"
    assert 2500 <= result.value <= 3000
    assert "json_each" in result.query


def test_named_deployments_without_data_are_reported_as_no_data(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW)
    results = by_key(evaluate([rules["error-rate"]], store, now=NOW, deployments=["blue", "retired"]))
    assert results[("error-rate", "blue", "")].state == "ok"
    retired = results[("error-rate", "retired", "")]
    assert (retired.state, retired.samples, retired.value) == ("no_data", 0, None)


class FailingStore(TelemetryStore):
    """A store whose latency reads fail as a corrupt file's would (the other reads work)."""

    def series(self, endpoint, arms, metrics, *args, **kwargs):
        if "inference_latency_ms" in metrics:
            raise TelemetryStoreError("telemetry store x.db: database disk image is malformed")
        return super().series(endpoint, arms, metrics, *args, **kwargs)


def test_a_store_error_is_an_error_result_and_the_other_rules_still_run(tmp_path, rules):
    with FailingStore(tmp_path / "telemetry.db") as failing:
        complete_until(failing, NOW)
        traffic(failing, "blue", NOW - 3 * HOUR, NOW)
        results = evaluate(rules.values(), failing, now=NOW)
    states = {(r.rule, r.state) for r in results}
    assert ("latency-increase", "error") in states
    [error] = [r for r in results if r.rule == "latency-increase"]
    assert error.deployment == "*" and "malformed" in error.message
    assert ("error-rate", "ok") in states and ("entities-drop", "ok") in states


def test_the_table_shows_every_rule_and_deployment(store, rules):
    traffic(store, "blue", NOW - 3 * HOUR, NOW - 10 * MIN)
    traffic(store, "blue", NOW - 10 * MIN, NOW, latency_ms=125.0)
    results = evaluate(standalone(rules.values()), store, now=NOW)
    table = format_results(results)
    lines = table.splitlines()
    assert lines[0].startswith("alert rules at 2023-11-14 22:13:20 UTC:") and "1 firing" in lines[0]
    assert lines[1].split()[:5] == ["RULE", "DEPLOYMENT", "LABEL", "STATE", "VALUE"]
    assert len(lines) == 2 + len(results)
    latency = next(line for line in lines if line.startswith("latency-increase"))
    assert latency.split()[:5] == ["latency-increase", "blue", "-", "firing", "125"]
    assert "> 100 (2 x baseline 50)" in latency and "150/20" in latency and "(22:03:20, 22:13:20]" in latency
    verbose = format_results(results, verbose=True)
    assert "SELECT" in verbose and "baseline: (endpoint) over (20:13:20, 21:13:20]" in verbose
    assert "traffic classes read: live" in verbose
    assert format_results([]).startswith("no alert results")


# -------------------------------------------------------------------------------------------- the rules file


def test_the_rules_file_loads():
    rules = load_rules(default_rules_path())
    names = [r.name for r in rules]
    assert names[:5] == [
        "latency-increase",
        "error-rate",
        "entities-drop",
        "entities-drop-per-label",
        "empty-predictions",
    ]
    assert {r.signal for r in rules[:2]} == {"system"} and {r.signal for r in rules[2:5]} == {"model"}
    reference = [r.name for r in rules if r.needs_reference]
    assert reference == [
        "latency-vs-reference", "error-rate-vs-reference", "entities-vs-reference", "entities-per-label-vs-reference",
        "empty-rate-vs-reference",
    ]  # fmt: skip
    assert [r.name for r in standalone(rules)] == [name for name in names if name not in reference]
    self_comparing = [r for r in rules if r.condition.baseline is not None and not r.needs_reference]
    assert {r.condition.baseline.deployment for r in self_comparing} == {"endpoint"}  # a rollout does not blind them


GOOD = """
version: 1
rules:
  - name: lat
    description: latency
    signal: system
    metric: inference_latency_ms
    aggregation: mean
    window: 5m
    for: 10m
    min_samples: 20
    condition: {op: ">", factor: 2.0, baseline: {window: 1h, offset: 1h}}
"""


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("window: 5m", "window: 5 minutes"), "rule 'lat' (rules[0]), field 'window': '5 minutes' is not a duration"),
        (("window: 5m", "window: 300"), "rule 'lat' (rules[0]), field 'window': write a duration with its unit"),
        (("min_samples: 20", "min_samples: 0"), "field 'min_samples': Input should be greater than or equal to 1"),
        (("factor: 2.0", "factor: -2"), "field 'condition.factor': Input should be greater than 0"),
        (('op: ">"', 'op: "=>"'), "field 'condition.op': Input should be '>', '>=', '<' or '<='"),
        (("factor: 2.0,", "treshold: 3, factor: 2.0,"), "field 'condition.treshold': Extra inputs are not permitted"),
        ((", baseline: {window: 1h, offset: 1h}", ""), "field 'condition.baseline': a relative condition ('factor')"),
        (("factor: 2.0, baseline: {window: 1h, offset: 1h}", "threshold: 3, factor: 2"), "field 'condition': give"),
        (("metric: inference_latency_ms", "metric: latency"), "field 'metric': unknown metric 'latency'"),
        (("metric: inference_latency_ms", "metric: entities_detected_count"), "is a model metric, not a system one"),
        (("metric: inference_latency_ms", "metric: request_count"), "field 'metric': aggregation 'mean' needs a his"),
        (("aggregation: mean", "aggregation: rate"), "rule 'lat' (rules[0]), field 'numerator': aggregation 'rate'"),
        (("aggregation: mean", "aggregation: median"), "field 'aggregation': Input should be 'mean', 'p50'"),
        (("    min_samples: 20\n", ""), "rule 'lat' (rules[0]), field 'min_samples': Field required"),
        (("name: lat", "name: Lat Rule"), "rule 'Lat Rule' (rules[0]), field 'name': String should match pattern"),
        (("severity", "severity"), None),
    ],
)
def test_a_bad_rules_file_names_the_rule_and_the_field(change, message):
    text = GOOD.replace(*change)
    if message is None:  # the unchanged file is valid
        assert parse_rules(text)[0].name == "lat"
        return
    with pytest.raises(RulesError) as caught:
        parse_rules(text, source="alerts/rules.yaml")
    assert str(caught.value).startswith("alerts/rules.yaml: ")
    assert message in str(caught.value)


def test_other_rules_file_problems(tmp_path):
    with pytest.raises(RulesError, match=r"not valid YAML \(line 2"):
        parse_rules("rules:\n  - name: [", source="r.yaml")
    with pytest.raises(RulesError, match="expected a mapping with a 'rules' list"):
        parse_rules("- a\n- b\n")
    with pytest.raises(RulesError, match="field 'rules': List should have at least 1 item"):
        parse_rules("rules: []\n")
    with pytest.raises(RulesError, match="rule 'lat' \\(rules\\[1\\]\\), field 'name': duplicate rule name"):
        parse_rules(GOOD + textwrap.indent(GOOD.split("rules:\n", 1)[1], ""))
    with pytest.raises(RulesError, match="per_label.*needs a numerator with a label"):
        parse_rules(
            GOOD.replace(
                "metric: inference_latency_ms\n    aggregation: mean", "aggregation: rate\n    per_label: true"
            ).replace("window: 5m", "numerator: server_error_count\n    denominator: request_count\n    window: 5m")
        )
    with pytest.raises(RulesError, match="cannot read the alert rules"):
        load_rules(tmp_path / "missing.yaml")


# --------------------------------------------------------------------------------------------------- KQL


def test_kql_for_an_error_rate_uses_appmetrics_and_integer_percentages(rules):
    kql = to_kql(rules["error-rate"])
    for text in (
        "AppMetrics",
        'Name in ("server_error_count", "request_count")',
        'sumif(Sum, Name == "server_error_count")',
        'tostring(Properties["deployment"])',
        'tostring(Properties["model_version"])',
        "100.0 * numerator / samples",
        "value > 5\n",
        "let window_ = 5m;",
        "let steps_ = 2;",
        "let min_samples_ = 20;",
        "steps_held == steps_",
    ):
        assert text in kql, text
    assert "// nerops alert rule 'error-rate' (critical, system)" in kql


def test_kql_for_relative_rules_compares_with_the_baseline_in_percent(rules):
    latency = to_kql(rules["latency-increase"])
    assert 'sumif(Sum, Name == "inference_latency_ms"), samples = sumif(ItemCount, Name == "inference_latency_ms")' in (
        latency
    )
    assert "TimeGenerated > now_ - 2h and TimeGenerated <= now_ - 1h" in latency
    assert "100.0 * value / baseline > 200" in latency
    per_label = to_kql(rules["entities-drop-per-label"])
    assert "by deployment, label, step" in per_label and "100.0 * value / baseline <= 50" in per_label
    assert "let min_samples_ = 50;" in per_label and "let window_ = 10m;" in per_label
    canary = rule(condition={"op": ">", "factor": 1.5, "baseline": {"window": "10m", "deployment": "reference"}})
    assert 'let reference_ = "blue";' in to_kql(canary, reference="blue")
    with pytest.raises(KqlError, match="reference"):
        to_kql(canary)
    with pytest.raises(KqlError, match="AppMetrics does not keep"):
        to_kql(rule(aggregation="p95"))


def test_kql_for_reference_endpoint_and_edge_rules(rules):
    errors = to_kql(rules["error-rate-vs-reference"], reference="stable")
    assert 'let reference_ = "stable";' in errors and "deployment == reference_" in errors
    assert "value > 2 * baseline + 2" in errors  # the margin, not a percentage of a baseline that may be 0
    latency = to_kql(rules["latency-increase"])
    assert 'extend deployment = "*"' in latency and "on k_" in latency  # the whole endpoint's hour before
    assert 'where traffic_class in ("live")' in latency
    slow = to_kql(rules["slow-requests"])
    assert 'sumif(Sum, Name == "latency_over_2500ms")' in slow
    probes = to_kql(rule(traffic=["probe", "smoke"], condition={"op": ">", "threshold": 100}))
    assert 'where traffic_class in ("probe", "smoke")' in probes


def test_every_rule_compiles_to_a_scheduled_query_rule(rules):
    for the_rule in rules.values():
        if the_rule.local_only:
            with pytest.raises(KqlError, match=f"rule '{the_rule.local_only}' stands in for it"):
                to_kql(the_rule)
            assert not rules[the_rule.local_only].local_only
            continue
        properties = scheduled_query_rule(the_rule, reference="blue")
        criteria = properties["criteria"]["allOf"][0]
        assert isinstance(criteria["threshold"], int) and criteria["operator"] == "GreaterThan"
        assert properties["evaluationFrequency"] == {300: "PT5M", 600: "PT10M"}[the_rule.window]
        assert criteria["query"].count("(") == criteria["query"].count(")")
