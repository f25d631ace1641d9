"""The peer of the rollout-flows bench: Flagger's analysis replayed on answered requests, by a table of cases."""

from __future__ import annotations

import pytest

from bench.rollout_flows import flagger


def answers(seconds: float, per_second: int, *, status=lambda i: 200, latency=lambda i: 20.0, start=100.0):
    """``per_second`` answered requests a second for ``seconds``: (sent, answered, deployment, status, ms)."""
    n = int(seconds * per_second)
    return [(start + i / per_second, start + i / per_second + 0.01, "v2-1", status(i), latency(i)) for i in range(n)]


@pytest.mark.parametrize(
    ("requests", "threshold", "decided_after", "why"),
    [
        (answers(60, 10), 1, None, "not decided (0 failed checks)"),  # healthy: never
        (answers(60, 10, status=lambda i: 500 if i % 2 else 200), 1, 5.0, "request-success-rate 50.0 % < 99 %"),
        (answers(60, 10, status=lambda i: 500 if i % 2 else 200), 10, 50.0, "request-success-rate"),  # cumulative
        (answers(60, 10, latency=lambda i: 800.0), 1, 5.0, "request-duration p99 800 ms > 500 ms"),
        (answers(60, 10, latency=lambda i: 200.0), 10, None, "not decided"),  # 10x slower, under 500 ms: passes
        # 50 answers a window: one slow answer is the window's p99 (nearest rank)
        (answers(60, 10, latency=lambda i: 900.0 if i % 100 == 0 else 20.0), 1, 5.0, "p99 900 ms"),
        (answers(60, 10, latency=lambda i: 900.0 if i % 100 == 0 else 20.0), 10, None, "not decided (6 failed"),
    ],
)
def test_flaggers_checks_replayed(requests, threshold, decided_after, why):
    got = flagger(requests, requests[0][0], requests[-1][0] + 0.5, threshold, 5.0)
    assert got["decided_after_s"] == decided_after
    assert why in got["why"]


def test_a_window_with_no_values_is_a_failed_check():
    early = answers(2, 10)
    got = flagger(early, early[0][0], early[0][0] + 60, 3, 5.0)  # nothing answered after the first 2 s
    assert got["decided_after_s"] == 20.0 and got["why"] == "no values"  # the windows ending at 10, 15, 20 s
    assert flagger([], None, 60.0, 1, 5.0)["why"] == "the candidate answered no request"
