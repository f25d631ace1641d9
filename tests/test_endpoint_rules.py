"""Endpoint state rules (Azure ML's), traffic pickers and request validation: pure, as tables."""

from __future__ import annotations

import itertools
import random
from collections import Counter

import pytest

from nerops.serving.scoring import Limits, ScoringError, parse_request, score
from nerops.serving.state import (
    DeploymentSpec,
    EndpointRuleError,
    EndpointState,
    MirrorPicker,
    TrafficPicker,
    routing_bucket,
    with_deployment,
    with_traffic,
    without_deployment,
)


def endpoint(*names: str, traffic=None, mirror=None) -> EndpointState:
    state = EndpointState("ep")
    for name in names:
        state = with_deployment(state, DeploymentSpec(name, f"models:/m/{len(name)}", str(len(name))))
    return EndpointState(state.name, state.deployments, traffic or {}, mirror or {})


@pytest.mark.parametrize(
    ("traffic", "mirror", "error"),
    [
        ({"blue": 100}, {}, None),
        ({"blue": 70, "green": 30}, {}, None),
        ({"blue": 100, "green": 0}, {"green": 20}, None),
        ({}, {}, None),
        ({"blue": 70, "green": 20}, {}, "sum to 100, not 90"),
        ({"blue": 70, "green": 40}, {}, "sum to 100, not 110"),
        ({"blue": 100, "red": 0}, {}, "unknown deployment 'red'"),
        ({"blue": 101}, {}, "integer from 0 to 100"),
        ({"blue": 50.5, "green": 49.5}, {}, "integer from 0 to 100"),
        ({"blue": True}, {}, "integer from 0 to 100"),
        ({"blue": 100}, {"green": 60}, "at most 50 %"),
        ({"blue": 50, "green": 50}, {"green": 10}, "either live or mirrored"),
        ({}, {"green": 10}, "needs live traffic"),
        ({"blue": 100}, {"red": 10}, "unknown deployment 'red'"),
    ],
)
def test_traffic_rules(traffic, mirror, error):
    state = endpoint("blue", "green")
    if error is None:
        after = with_traffic(state, traffic, mirror)
        assert sum(after.traffic.values()) in (0, 100)
        assert 0 not in after.traffic.values()  # zero entries are dropped, as Azure ML does
    else:
        with pytest.raises(EndpointRuleError, match=error):
            with_traffic(state, traffic, mirror)


def test_a_deployment_with_traffic_cannot_be_deleted():
    state = endpoint("blue", "green", traffic={"blue": 100}, mirror={"green": 10})
    with pytest.raises(EndpointRuleError, match="still takes traffic"):
        without_deployment(state, "blue")
    with pytest.raises(EndpointRuleError, match="10 % mirrored"):
        without_deployment(state, "green")
    with pytest.raises(EndpointRuleError, match="no deployment named 'red'"):
        without_deployment(state, "red")
    after = without_deployment(with_traffic(state, {"blue": 100}, {}), "green")
    assert set(after.deployments) == {"blue"}


@pytest.mark.parametrize("name", ["b", "1blue", "blue_green", "a" * 33, "blue green"])
def test_bad_deployment_names(name):
    with pytest.raises(EndpointRuleError, match="3-32 characters"):
        with_deployment(EndpointState("ep"), DeploymentSpec(name, "models:/m/1", "1"))


def test_state_round_trips_and_etag_tracks_changes():
    state = endpoint("blue", "green", traffic={"blue": 100})
    assert EndpointState.from_dict(state.to_dict()) == state
    assert with_traffic(state, {"blue": 50, "green": 50}).etag() != state.etag()


@pytest.mark.parametrize("weights", [{"blue": 70, "green": 30}, {"a": 5, "b": 95}, {"a": 1, "b": 1, "c": 98}])
def test_random_assignment_follows_the_weights(weights):
    picker = TrafficPicker(weights, list(weights), random.Random(0))
    counts = Counter(picker.pick() for _ in range(20_000))
    for name, share in weights.items():  # within 4 standard deviations of the share
        sd = (20_000 * share / 100 * (1 - share / 100)) ** 0.5
        assert abs(counts[name] - 200 * share) <= 4 * sd + 1, (name, counts[name])


def test_a_small_candidate_sees_a_fair_sample_of_the_documents():
    """50 CVs replayed in order, 2,000 requests, 5 % to the candidate: a cycle would show it 5 CVs."""
    picker = TrafficPicker({"stable": 95, "canary": 5}, ["stable", "canary"], random.Random(1))
    seen = {i % 50 for i in range(2000) if picker.pick() == "canary"}
    assert len(seen) >= 35


def test_the_same_seed_gives_the_same_assignment():
    def run(seed: int) -> list[str | None]:
        picker = TrafficPicker({"a": 30, "b": 70}, ["a", "b"], random.Random(seed))
        return [picker.pick() for _ in range(50)]

    assert run(3) == run(3) and run(3) != run(4)


def test_routing_keys_are_sticky_and_monotone_as_the_candidate_grows_and_rolls_back():
    keys = [f"doc-{i}" for i in range(2000)]
    order = ["stable", "canary"]  # the canary is the newer deployment

    def on_canary(weight: int) -> set[str]:
        weights = {"stable": 100 - weight, "canary": weight} if weight < 100 else {"canary": 100}
        picker = TrafficPicker(weights, order, random.Random(0))
        return {key for key in keys if picker.pick(key) == "canary"}

    steps = [on_canary(w) for w in (5, 25, 50, 100)]
    for smaller, larger in itertools.pairwise(steps):
        assert smaller <= larger, "a key on the canary stays there as its weight grows"
    assert 60 <= len(steps[0]) <= 140 and len(steps[-1]) == len(keys)
    assert on_canary(5) == steps[0], "the same key goes the same way every time (no table, no randomness)"
    picker = TrafficPicker({"stable": 100}, order, random.Random(0))
    assert {picker.pick(key) for key in steps[2]} == {"stable"}, "a rollback sends every key back"
    assert routing_bucket("doc-1") == routing_bucket("doc-1") and 0 <= routing_bucket("doc-1") < 100


def test_mirror_picker_copies_its_share():
    picker = MirrorPicker({"green": 20}, random.Random(0))
    copies = sum(bool(picker.pick()) for _ in range(10_000))
    assert abs(copies - 2000) <= 4 * (10_000 * 0.2 * 0.8) ** 0.5
    assert MirrorPicker({}, random.Random(0)).pick() == []


# --- request validation: ten kinds of bad input, each a 4xx with a code -------------------

JSON = "application/json"


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"{not json", JSON, 400, "invalid_json"),
        (b"\xff\xfe{}", JSON, 400, "invalid_utf8"),
        (b"", JSON, 400, "empty_body"),
        (b'{"text": "x"}', "text/plain", 415, "unsupported_media_type"),
        (b'{"text": "x"}', None, 415, "unsupported_media_type"),
        (b'{"text": "x"}', "application/json; charset=latin-1", 415, "unsupported_charset"),
        (b'{"txt": "x"}', JSON, 422, "invalid_request"),
        (b'{"text": "a", "documents": ["b"]}', JSON, 422, "invalid_request"),
        (b'["text"]', JSON, 422, "invalid_request"),
        (b'{"text": 42}', JSON, 422, "invalid_text"),
        (b'{"text": null}', JSON, 422, "invalid_text"),
        (b'{"text": "   "}', JSON, 422, "empty_text"),
        (b'{"text": "a\\u0000b"}', JSON, 422, "invalid_text"),
        (b'{"documents": "one"}', JSON, 422, "invalid_documents"),
        (b'{"documents": []}', JSON, 422, "invalid_documents"),
        (b'{"documents": ["ok", 3]}', JSON, 422, "invalid_text"),
        (b'{"documents": ["x","x","x","x"]}', JSON, 422, "too_many_documents"),
        (b'{"text": "' + b"x" * 200 + b'"}', JSON, 413, "payload_too_large"),
        (b'{"text": "' + b"x" * 60 + b'"}', JSON, 422, "text_too_long"),
    ],
)
def test_bad_requests(body, content_type, status, code):
    with pytest.raises(ScoringError) as info:
        parse_request(body, content_type, Limits(max_body_bytes=150, max_documents=3, max_text_chars=50))
    assert (info.value.status, info.value.code) == (status, code)
    assert info.value.body()["error"]["code"] == code


def test_deeply_nested_json_is_a_client_error():
    with pytest.raises(ScoringError) as info:
        parse_request(b"[" * 100_000, JSON)
    assert (info.value.status, info.value.code) == (400, "invalid_json")


def test_error_messages_never_quote_the_input():
    secret = "Secretia Privatus"
    for body in (f'{{"text": {len(secret)}, "x": "{secret}"}}', f'{{"documents": ["{secret}", 1]}}', f"{secret}"):
        with pytest.raises(ScoringError) as info:
            parse_request(body.encode(), JSON)
        assert "Secretia" not in info.value.message


class Echo:
    def predict(self, text: str) -> list[dict[str, object]]:
        return [{"label": "Name", "start": 0, "end": 3, "text": text[:3]}] if text.startswith("Ann") else []


def test_score_single_and_batch_with_count_only_signals():
    texts, batch = parse_request(b'{"documents": ["Ann Lee", "nobody here"]}', JSON)
    scored = score(texts, batch, Echo(), model_version="3", deployment="blue")
    assert scored.payload["documents"][0]["entities"][0]["text"] == "Ann"
    assert scored.payload["model_version"] == "3" and scored.payload["deployment"] == "blue"
    assert [(s.input_chars, s.entities, dict(s.entities_per_label)) for s in scored.signals] == [
        (7, 1, {"Name": 1}),
        (11, 0, {}),
    ]
    single = score(
        *parse_request(b'{"text": "Ann"}', "application/json; charset=utf-8"), Echo(), model_version="3", deployment="b"
    )
    assert single.payload["entities"][0]["label"] == "Name"
