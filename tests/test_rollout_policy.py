"""rollouts/policy.yaml: the shipped policy loads, each profile's plan is valid, bad files are refused by name."""

from __future__ import annotations

from dataclasses import replace

import pytest
import yaml

from nerops.rollout.plan import build_plan, preview, render_preview
from nerops.rollout.policy import PROFILES, PolicyError, Probes, load_policy, parse_policy, policy_sha256


@pytest.fixture(scope="module")
def shipped():
    return load_policy()


def test_the_shipped_policy_has_every_profile_and_each_plan_is_valid(shipped):
    policy, text = shipped
    assert set(PROFILES) <= set(policy.profiles)
    plans = {name: build_plan(policy, name, policy_sha256=policy_sha256(text)) for name in PROFILES}
    assert plans["production"].weights == [0, 5, 25, 50, 100]
    assert plans["demo"].weights == [0, 0, 25, 50, 100]  # readiness, shadow, canary, bake
    assert plans["test"].weights == [0, 5, 25, 50, 100]  # as production, in seconds
    assert plans["production"].policy_sha256 == policy_sha256(text)
    enforced = sum(m.alpha_share for m in policy.metrics if m.enforced)
    assert enforced <= 1.0


def test_the_preview_prints_the_worst_case_and_when_each_step_reaches_its_minimum(shipped):
    probed = build_plan(shipped[0], "production")
    assert probed.probes == Probes(rate=1.0, when="short")
    plan = replace(probed, probes=None)  # live traffic alone
    rows, worst = preview(plan, rate=2.0)
    assert worst == 5 * 60 + 3 * 1800 + 2400
    by_step = {row.step.label: row for row in rows}
    assert by_step["canary 5%"].candidate_per_minute == pytest.approx(6.0)
    assert by_step["canary 5%"].reached_at == pytest.approx(100 / 0.1)  # 100 samples at 0.1 request/s
    text = render_preview(plan, 2.0)
    assert "worst case total: 2h15m" in text and "minimum met after 16m40s" in text
    slow = render_preview(plan, 0.05)
    assert "MINIMUM NOT MET by the deadline: send probe traffic" in slow
    # with the profile's probes (1 pair/s on both arms) the quiet service reaches its minimum within the waits
    rows, _ = preview(probed, rate=0.05)
    by_step = {row.step.label: row for row in rows}
    assert by_step["canary 5%"].reached_at == pytest.approx(100 / (0.05 * 0.05 + 1.0))
    assert all(row.reached_at is not None for row in rows if row.step.kind != "readiness")
    text = render_preview(probed, 0.05)
    assert "probes: 1 pairs/s while short of the minimum, from the test CVs" in text and "NOT MET" not in text


def edit(text, change):
    raw = yaml.safe_load(text)
    change(raw)
    return yaml.safe_dump(raw)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda r: r["profiles"]["production"]["steps"].__setitem__(
                1, {"weight": 3, "wait": "10m", "deadline": "30m"}
            ),
            "weights must rise from step to step: 5 -> 3 -> 50 -> 100",
        ),
        (
            lambda r: r["profiles"]["production"]["steps"][0].__setitem__("wait", "30s"),
            "step 1 (canary 5%): wait 30s is shorter than the judge's interval 1m",
        ),
        (
            lambda r: r["profiles"]["production"]["steps"][0].__setitem__("deadline", "5m"),
            "step 1 (canary 5%): deadline 5m comes before its wait 10m ends",
        ),
    ],
)
def test_an_invalid_plan_is_refused_naming_the_profile_and_the_step(shipped, change, message):
    policy = parse_policy(edit(shipped[1], change))
    with pytest.raises(PolicyError, match="rollout profile 'production'") as raised:
        build_plan(policy, "production")
    assert message in str(raised.value)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda r: r["profiles"].pop("test"), "missing profile(s) test"),
        (lambda r: r["metrics"][0].__setitem__("numerator", "server_errors"), "metrics[0] 'server-error-rate'"),
        (lambda r: r["metrics"][1].__setitem__("metric", "request_count"), "is a counter: this test needs a histogram"),
        (lambda r: r["metrics"][0].__setitem__("alpha_share", 0.9), "alpha_share add up to 1.65: at most 1"),
        (lambda r: r["metrics"][0].__setitem__("mode", "maybe"), "metrics[0] 'server-error-rate' > mode"),
        (lambda r: r["metrics"][6].pop("threshold"), "a 'ceiling' metric needs a 'threshold'"),
        (lambda r: r["profiles"]["demo"]["min_samples"].__setitem__("nope", 3), "unknown metric(s) nope"),
        (lambda r: r["profiles"]["production"]["steps"][0].__setitem__("wait", "ten minutes"), "is not a duration"),
        (lambda r: r["metrics"].append(dict(r["metrics"][0])), "duplicate name(s) server-error-rate"),
        (lambda r: r["profiles"]["production"]["probes"].__setitem__("rate", 0), "probes > rate"),
        (lambda r: r["profiles"]["production"]["probes"].__setitem__("when", "never"), "probes > when"),
    ],
)
def test_an_invalid_policy_file_is_refused_naming_the_entry_and_the_field(shipped, change, message):
    with pytest.raises(PolicyError) as raised:
        parse_policy(edit(shipped[1], change), source="rollouts/policy.yaml")
    assert message in str(raised.value) and "rollouts/policy.yaml" in str(raised.value)


def test_a_file_that_is_not_yaml_or_missing_says_so(tmp_path):
    with pytest.raises(PolicyError, match=r"not valid YAML \(line 1, column 19\)"):
        parse_policy("metrics: [unclosed", source="p.yaml")
    with pytest.raises(PolicyError, match="cannot read the rollout policy"):
        load_policy(tmp_path / "missing.yaml")
    with pytest.raises(PolicyError, match="unknown rollout profile 'staging'"):
        build_plan(load_policy()[0], "staging")


def test_rollout_plan_command_previews_a_profile_and_refuses_an_unknown_one():
    from click.testing import CliRunner

    from nerops.cli import main

    runner = CliRunner()
    shown = runner.invoke(main, ["rollout", "plan", "--profile", "production", "--rate", "2"])
    assert shown.exit_code == 0, shown.output
    assert "1. canary 5%    candidate 6.0/min" in shown.output and "worst case total: 2h15m" in shown.output
    refused = runner.invoke(main, ["rollout", "plan", "--profile", "staging"])
    assert refused.exit_code == 2 and "unknown rollout profile 'staging'" in refused.output


def test_the_preview_does_not_hold_a_shadow_step_for_latency_it_cannot_measure(shipped):
    plan = build_plan(shipped[0], "demo")
    rows, _ = preview(plan, rate=2.0)
    shadow, canary = rows[1], rows[2]
    assert shadow.step.kind == "shadow" and shadow.reached_at == pytest.approx(30.0)  # 30 mirrored at 1/s
    # latency is first measured at 25 %: 30 samples at 0.5 request/s
    assert canary.step.weight == 25 and canary.reached_at == pytest.approx(60.0)


def test_a_blue_green_plan_whose_latency_is_never_compared_is_refused_until_latency_is_dry_run(shipped):
    def blue_green(raw):
        raw["profiles"]["production"]["steps"] = [{"weight": 100, "wait": "20m", "deadline": "40m"}]

    policy = parse_policy(edit(shipped[1], blue_green))
    with pytest.raises(PolicyError) as raised:
        build_plan(policy, "production")
    assert "metric 'latency-distribution' (traffic live, probe) is measured by no step" in str(raised.value)
    assert "latency-ceiling" not in str(raised.value)  # the candidate's own latency is read at 100 %

    def latency_dry_run(raw):
        blue_green(raw)
        for metric in raw["metrics"]:
            if metric["name"] in ("latency-distribution", "latency-mean"):
                metric["mode"] = "dry_run"

    assert build_plan(parse_policy(edit(shipped[1], latency_dry_run)), "production").weights == [0, 100]
