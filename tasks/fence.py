"""The second fence of a rollout: the strict Prefect global concurrency limit ``rollout-<endpoint>`` (limit 1).

The first fence is the rollout record's owner and lease (:mod:`nerops.controller.records`): it alone decides
who may move traffic. This one keeps two Prefect runs of the same endpoint from running side by side at all.
The slot is held with a Prefect concurrency lease (Prefect's minimum: 60 s) renewed by a thread; the lease
id is kept in ``.state/rollouts/<endpoint>/.prefect-lease.json`` beside the record, so that a retry of the
same flow run (after a ``kill -9``, Prefect runs one incarnation of a flow run at a time) releases the slot
its dead incarnation left instead of waiting for that lease to run out.

Losing the lease (the server says it is gone, or it could not be renewed before it ran out) is a crash: the
flow stops after the look in hand (the record is saved at every look), gives up its claim on the rollout and
ends ``Failed`` named ``LeaseLost``; the next owner resumes or rolls back.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from pathlib import Path

from nerops.controller.records import RolloutRefused

LEASE_S = 60.0  # Prefect refuses a shorter concurrency lease


def ensure_concurrency_limit(name: str) -> None:
    """The strict global concurrency limit of one rollout per endpoint (created at 1 if missing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=name, limit=1))


def _lease_left(lease_file: Path) -> dict:
    """What the lease file says ({} when there is none or it cannot be read)."""
    try:
        left = json.loads(Path(lease_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return left if isinstance(left, dict) else {}


def _release(client, lease_id: str) -> None:
    with contextlib.suppress(Exception):  # already expired: nothing to release
        client.release_concurrency_slots_with_lease(lease_id)


def release_left_behind(lease_file: Path) -> str:
    """Release the concurrency lease a dead owner of the endpoint's rollout left (its lease file), so that the
    next run need not wait up to a minute for it to run out: what a takeover of that rollout does. A run that
    still lives loses its fence (``LeaseLost``), as it has already lost the rollout. ``""``: none was left."""
    from prefect.client.orchestration import get_client

    left = _lease_left(lease_file)
    lease_id = str(left.get("lease_id") or "")
    if lease_id:
        with contextlib.suppress(Exception), get_client(sync_client=True) as client:  # the API down: it runs out
            _release(client, lease_id)
    with contextlib.suppress(OSError):
        Path(lease_file).unlink()
    return f"released the concurrency lease {lease_id} of {left.get('flow_run') or 'a dead run'}" if lease_id else ""


class EndpointFence:
    """Hold ``limit`` for one flow run: ``with EndpointFence(...) as fence:`` then check ``fence.lost``."""

    def __init__(
        self,
        limit: str,
        lease_file: Path,
        flow_run_id: str | None,
        *,
        renew_every: float = 30.0,
        wait_s: float = 2 * LEASE_S + 30.0,
        lease_s: float = LEASE_S,
    ) -> None:
        self.limit = limit
        self.lease_file = Path(lease_file)
        self.flow_run_id = flow_run_id
        self.renew_every = max(0.5, min(renew_every, lease_s / 2))
        self.wait_s = wait_s
        self.lease_s = lease_s
        self.lease_id: str | None = None
        self.lost = ""  # why the lease is gone ("" while it is held)
        self.released_earlier = ""  # the lease of this flow run's earlier incarnation, released on entry
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> EndpointFence:
        from prefect.client.orchestration import get_client

        ensure_concurrency_limit(self.limit)
        with get_client(sync_client=True) as client:
            self._release_earlier(client)
            self.lease_id = self._acquire(client)
        self.lease_file.write_text(
            json.dumps({"limit": self.limit, "lease_id": self.lease_id, "flow_run": self.flow_run_id}),
            encoding="utf-8",
        )
        self._thread = threading.Thread(target=self._renew_loop, name=f"lease {self.limit}", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        from prefect.client.orchestration import get_client

        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self.lease_id and not self.lost:
            with contextlib.suppress(Exception), get_client(sync_client=True) as client:  # else it runs out by itself
                _release(client, self.lease_id)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.lease_file.read_text(encoding="utf-8")).get("lease_id") == self.lease_id:
                self.lease_file.unlink()

    def _release_earlier(self, client) -> None:
        """This flow run's earlier incarnation died holding the slot: release it (a retry, not a rival)."""
        earlier = _lease_left(self.lease_file)
        if self.flow_run_id and earlier.get("flow_run") == self.flow_run_id and earlier.get("lease_id"):
            _release(client, str(earlier["lease_id"]))
            self.released_earlier = str(earlier["lease_id"])

    def _acquire(self, client) -> str:
        import httpx

        deadline = time.monotonic() + self.wait_s
        while True:
            try:
                response = client.increment_concurrency_slots_with_lease(
                    names=[self.limit], slots=1, mode="concurrency", lease_duration=self.lease_s
                )
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code != 423:
                    raise
                if time.monotonic() > deadline:
                    raise RolloutRefused(
                        f"the Prefect concurrency limit {self.limit!r} stayed taken for {self.wait_s:.0f} s: another "
                        "run holds it (see the Prefect UI, Concurrency): one rollout per endpoint at a time"
                    ) from None
                time.sleep(min(float(exc.response.headers.get("Retry-After", 1.0)), 5.0))
                continue
            data = response.json()
            if not data.get("limits"):
                raise RolloutRefused(f"the Prefect concurrency limit {self.limit!r} does not exist (strict)")
            return str(data["lease_id"])

    def _renew_loop(self) -> None:
        import httpx
        from prefect.client.orchestration import get_client

        renewed = time.monotonic()
        while not self._stop.wait(self.renew_every):
            try:
                with get_client(sync_client=True) as client:
                    client.renew_concurrency_lease(self.lease_id, lease_duration=self.lease_s)
                renewed = time.monotonic()
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code in (404, 410):  # Prefect 3 answers 410 Gone for a lease it let go
                    self.lost = f"the Prefect concurrency lease of {self.limit!r} is gone (revoked or expired)"
                    return
            except Exception as exc:  # the API unreachable: lost once the lease has certainly run out
                if time.monotonic() - renewed >= self.lease_s:
                    self.lost = (
                        f"the Prefect concurrency lease of {self.limit!r} could not be renewed for "
                        f"{self.lease_s:.0f} s ({type(exc).__name__}: {exc})"
                    )[:300]
                    return
