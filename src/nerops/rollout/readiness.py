"""The readiness step's verdict, pure: smoke requests pinned to the new deployment by header.

every smoke request answered 200 with a valid body   healthy
any answered with a server error (5xx)               unhealthy: the candidate cannot serve
none answered yet (connection refused, timeout)      error: try again until the step's deadline
"""

from __future__ import annotations

from collections.abc import Sequence

from nerops.rollout.verdicts import Verdict


def smoke_verdict(statuses: Sequence[int | None], *, required: int, now: float, interval: float = 0.0) -> Verdict:
    """``statuses``: one HTTP status per smoke request (None: no answer at all)."""
    failed = [s for s in statuses if s is not None and s >= 500]
    answered = [s for s in statuses if s == 200]
    lost = [s for s in statuses if s is None]
    wrong = [s for s in statuses if s is not None and s != 200 and s < 500]
    summary = f"{len(answered)} of {len(statuses)} smoke requests answered 200 (required: {required})"
    if failed:
        return Verdict("unhealthy", f"{summary}; server errors {sorted(set(failed))}", now, None, interval)
    if wrong:
        return Verdict("error", f"{summary}; refused with {sorted(set(wrong))}", now, None, interval)
    if lost or len(answered) < required:
        return Verdict("error", f"{summary}; {len(lost)} without an answer", now, None, interval)
    return Verdict("healthy", summary, now, None, interval)
