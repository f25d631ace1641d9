"""The webhook's pure decisions (nerops.triggers.github): signatures, push to retrain or not, the event."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import pytest

from nerops.triggers import github
from nerops.triggers.github import PayloadError, Signature, check_signature, decide, retrain_event, sign

MODEL_FILE = "src/nerops/model/config.py"
SHA_BEFORE, SHA_AFTER = "a" * 40, "b" * 40


def commit(modified=(), added=(), removed=(), message="a change by Alice <alice@example.com>") -> dict:
    return {
        "id": uuid.uuid4().hex[:40],
        "message": message,
        "author": {"name": "Alice", "email": "alice@example.com"},
        "added": list(added),
        "modified": list(modified),
        "removed": list(removed),
    }


def push(*commits: dict, ref="refs/heads/main", default_branch="main", head=None, **fields) -> dict:
    commits = list(commits) or [commit(["README.md"])]
    payload = {
        "ref": ref,
        "before": SHA_BEFORE,
        "after": SHA_AFTER,
        "created": False,
        "deleted": False,
        "forced": False,
        "base_ref": None,
        "repository": {"full_name": "acme/nerops", "default_branch": default_branch, "pushed_at": int(time.time())},
        "pusher": {"name": "alice", "email": "alice@example.com"},
        "sender": {"login": "alice"},
        "commits": commits,
        "head_commit": head if head is not None else commits[-1],
    }
    payload.update(fields)
    return payload


# (case, payload, verdict, reason fragment, files_complete)
CASES = [
    ("model config modified on main", push(commit([MODEL_FILE])), "retrain", "1 of 1 changed file(s) match", True),
    ("README only", push(commit(["README.md"])), "ignored", "none of 1 changed file(s)", True),
    ("model file removed", push(commit(removed=[MODEL_FILE])), "retrain", "1 of 1", True),
    ("model file added", push(commit(added=["src/nerops/model/new.py"])), "retrain", "1 of 1", True),
    ("faults.py is excluded", push(commit(["src/nerops/model/faults.py"])), "ignored", "none of 1", True),
    ("constraints.txt", push(commit(["constraints.txt", "docs/x.md"])), "retrain", "1 of 2", True),
    (
        "the same file in two commits counts once",
        push(commit([MODEL_FILE]), commit([MODEL_FILE, "README.md"])),
        "retrain",
        "1 of 2",
        True,
    ),
    (
        "head_commit lists a training file the commits do not",
        push(commit(["README.md"]), head=commit([MODEL_FILE])),
        "retrain",
        "1 of 2",
        True,
    ),
    ("another branch", push(commit([MODEL_FILE]), ref="refs/heads/feature/alice"), "ignored", "watched branch", True),
    ("a tag", push(commit([MODEL_FILE]), ref="refs/tags/v1.0"), "ignored", "a tag push", True),
    ("not a branch", push(commit([MODEL_FILE]), ref="refs/pull/1/head"), "ignored", "not a branch push", True),
    ("branch deleted", push(commit([MODEL_FILE]), deleted=True, after="0" * 40), "ignored", "a branch deletion", True),
    ("after is all zeros", push(commit([MODEL_FILE]), after="0" * 40), "ignored", "a branch deletion", True),
    ("another default branch", push(commit([MODEL_FILE]), default_branch="trunk"), "ignored", "refs/heads/trunk", True),
    (
        "forced push, no training file listed",
        push(commit(["README.md"]), forced=True),
        "retrain",
        "file lists may be incomplete: a forced push",
        False,
    ),
    (
        "branch created",
        push(commit(["README.md"]), created=True, before="0" * 40),
        "retrain",
        "file lists may be incomplete: the branch was created",
        False,
    ),
    ("no commits listed", push(commits=[], head_commit=None), "retrain", "the payload lists no commits", False),
    (
        "commits at GitHub's cap of 2048",
        push(*[commit(["README.md"]) for _ in range(2048)]),
        "retrain",
        "2048 commits listed, GitHub's cap (2048)",
        False,
    ),
    ("2047 commits are complete", push(*[commit(["README.md"]) for _ in range(2047)]), "ignored", "none of 1", True),
    (
        "a commit at the cap of 3000 files",
        push(commit([f"docs/{i}.md" for i in range(3000)])),
        "retrain",
        "commit(s) at GitHub's cap of 3000 files",
        False,
    ),
    (
        "commits without file lists (GitHub Actions' copy)",
        push({"id": "c1", "message": "m"}, head={"id": "c1", "message": "m"}),
        "retrain",
        "2 commit(s) without file lists",
        False,
    ),
    (
        "incomplete and a training file listed",
        push(commit([MODEL_FILE]), forced=True),
        "retrain",
        "1 of 1 listed changed file(s) match the training paths; file lists may be incomplete",
        False,
    ),
]


@pytest.mark.parametrize(
    ("payload", "verdict", "fragment", "complete"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_push_decisions(payload, verdict, fragment, complete):
    decision = decide("push", payload)
    assert decision.verdict == verdict
    assert fragment in decision.reason
    assert decision.files_complete is complete
    assert decision.wanted is (verdict == "retrain")
    # reasons are logged: never a file name, a commit message or another branch's name
    for secret in (MODEL_FILE, "README.md", "Alice", "alice@example.com", "feature/alice", "v1.0"):
        assert secret not in decision.reason


def test_matched_files_are_the_included_ones_in_payload_order():
    payload = push(commit(["README.md", "src/nerops/data.py"]), commit([MODEL_FILE, "src/nerops/model/faults.py"]))
    decision = decide("push", payload)
    assert decision.matched == ("src/nerops/data.py", MODEL_FILE)
    assert decision.changed == 4
    assert (decision.repository, decision.ref, decision.before, decision.after, decision.pusher) == (
        "acme/nerops",
        "refs/heads/main",
        SHA_BEFORE,
        SHA_AFTER,
        "alice",
    )


def test_pusher_falls_back_to_the_sender_and_never_to_an_email():
    payload = push(commit([MODEL_FILE]), pusher={"email": "alice@example.com"})
    assert decide("push", payload).pusher == "alice"
    payload = push(commit([MODEL_FILE]), pusher={}, sender={})
    assert decide("push", payload).pusher is None


@pytest.mark.parametrize("branch", ["release", "refs/heads/release"])
def test_a_configured_branch_overrides_the_default_branch(branch):
    assert decide("push", push(commit([MODEL_FILE]), ref="refs/heads/release"), branch=branch).verdict == "retrain"
    ignored = decide("push", push(commit([MODEL_FILE])), branch=branch)
    assert ignored.verdict == "ignored" and "refs/heads/release" in ignored.reason


def test_a_configured_repository_accepts_its_pushes_only():
    assert decide("push", push(commit([MODEL_FILE])), repository="ACME/nerops").verdict == "retrain"
    other = decide("push", push(commit([MODEL_FILE])), repository="acme/other")
    assert other.verdict == "ignored" and other.reason == "not the configured repository acme/other"


def test_a_push_older_than_the_replay_window_is_stale():
    week = 7 * 86400.0
    old = push(commit([MODEL_FILE]))
    old["repository"]["pushed_at"] = int(time.time() - week - 60)
    stale = decide("push", old, now=time.time(), max_age_s=week)
    assert stale.verdict == "ignored" and stale.reason.startswith("stale: pushed more than 7 day(s) ago")
    assert decide("push", old).verdict == "retrain"  # no clock given: no staleness check
    fresh = push(commit([MODEL_FILE]))
    fresh["repository"]["pushed_at"] = datetime.now(UTC).isoformat()  # other events' ISO form is read too
    assert decide("push", fresh, now=time.time(), max_age_s=week).verdict == "retrain"


def test_ping_is_a_pong_with_the_hook():
    decision = decide("ping", {"zen": "Keep it logically awesome.", "hook_id": 42, "repository": {"full_name": "a/b"}})
    assert (decision.verdict, decision.zen, decision.hook_id, decision.repository) == (
        "pong",
        "Keep it logically awesome.",
        42,
        "a/b",
    )
    assert decide("ping", {}).verdict == "pong"


def test_other_events_have_no_decision():
    with pytest.raises(ValueError, match="only push, ping"):
        decide("issues", {})


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({k: v for k, v in push().items() if k != "ref"}, "'ref'"),
        ({k: v for k, v in push().items() if k != "repository"}, "repository.full_name"),
        (push(repository={"full_name": "a/b"}), "default_branch"),
    ],
)
def test_a_push_without_its_required_fields_is_a_payload_error(payload, field):
    with pytest.raises(PayloadError, match=field):
        decide("push", payload)


def test_no_default_branch_is_fine_when_a_branch_is_configured():
    assert decide("push", push(commit([MODEL_FILE]), repository={"full_name": "a/b"}), branch="main").wanted


def test_the_retrain_event_has_the_push_coordinates_and_nothing_else():
    from prefect.events import Event

    files = [f"src/nerops/model/m{i}.py" for i in range(60)]
    decision = decide("push", push(commit(files)))
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    event = retrain_event(decision, "d-1", "f" * 64, occurred=when)
    assert event["event"] == "nerops.github.retrain-requested"
    assert event["resource"] == {
        "prefect.resource.id": "nerops.github.delivery.d-1",
        "prefect.resource.name": "acme/nerops",
    }
    assert event["related"] == [
        {"prefect.resource.id": "nerops.github.repository.acme/nerops", "prefect.resource.role": "repository"}
    ]
    payload = event["payload"]
    assert set(payload) == {
        "delivery",
        "repository",
        "ref",
        "commit",
        "before",
        "pusher",
        "matched",
        "files_complete",
        "reason",
    }
    assert payload["matched"] == files[:50]
    assert (payload["commit"], payload["before"], payload["delivery"], payload["files_complete"]) == (
        SHA_AFTER,
        SHA_BEFORE,
        "d-1",
        True,
    )
    assert "Alice" not in str(event) and "example.com" not in str(event)  # no message, author or email
    parsed = Event.model_validate(event)  # what the Prefect server will accept
    assert str(parsed.id) == event["id"] and parsed.occurred == when
    # the same delivery and body: the same id (Prefect stores an id once); another delivery: another id
    assert retrain_event(decision, "d-1", "f" * 64)["id"] == event["id"]
    assert retrain_event(decision, "d-2", "f" * 64)["id"] != event["id"]
    with pytest.raises(ValueError):
        retrain_event(decide("push", push()), "d-3", "f" * 64)


BODY = b'{"zen": "Design for failure.",  "hook_id": 1}\n'


@pytest.mark.parametrize(
    ("header", "secrets", "expected"),
    [
        (sign("s1", BODY), ["s1"], Signature.VALID),
        (sign("s1", BODY).upper().replace("SHA256=", "sha256="), ["s1"], Signature.VALID),
        (" " + sign("s1", BODY) + " ", ["s1"], Signature.VALID),
        (sign("old", BODY), ["new", "old"], Signature.VALID),
        (sign("other", BODY), ["s1", "s2"], Signature.WRONG),
        (sign("s1", BODY + b" "), ["s1"], Signature.WRONG),  # the raw body, byte for byte
        (None, ["s1"], Signature.MISSING),
        ("", ["s1"], Signature.MISSING),
        ("sha256=abc", ["s1"], Signature.MALFORMED),
        ("sha256=" + "g" * 64, ["s1"], Signature.MALFORMED),
        ("sha1=" + "a" * 40, ["s1"], Signature.MALFORMED),
        (sign("s1", BODY)[len("sha256=") :], ["s1"], Signature.MALFORMED),
        (sign("s1", BODY) + "00", ["s1"], Signature.MALFORMED),
    ],
)
def test_signatures(header, secrets, expected):
    assert check_signature(header, BODY, secrets) is expected


def test_the_caps_are_githubs():
    assert (github.MAX_COMMITS, github.MAX_FILES_PER_COMMIT, github.MAX_MATCHED_IN_EVENT) == (2048, 3000, 50)
