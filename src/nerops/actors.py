"""Who acted: the OS user and host behind every ledger entry, the Prefect run of a flow, a credential's fingerprint.

``acted_by()`` is what the ledger adds to each entry's evidence (key ``acted_by``) when governance opens
it: the configured actor name (``NEROPS_ACTOR``) may be anything, the OS user is what the process ran as.
A control credential (the endpoint's keys) is recorded by fingerprint only, never the secret.
"""

from __future__ import annotations

import getpass
import hashlib
import os
import socket
import sys


def os_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return f"uid{os.getuid()}"


def fingerprint(secret: str) -> str:
    """A short, stable, one-way name for a credential: ``sha256:`` and 16 hex digits."""
    return "sha256:" + hashlib.sha256(secret.encode("utf-8")).hexdigest()[:16]


def flow_run() -> dict[str, str] | None:
    """The Prefect flow run this process is in (only looked up where Prefect's runtime is already loaded)."""
    runtime = sys.modules.get("prefect.runtime.flow_run")
    if runtime is None:
        return None
    try:
        run_id = runtime.get_id()
    except Exception:  # noqa: BLE001 - outside a run, or no API: no run to record
        return None
    if not run_id:
        return None
    return {"id": str(run_id), "name": str(runtime.get_name()), "flow": str(runtime.get_flow_name())}


def acted_by(credential: str | None = None) -> dict[str, object]:
    """The OS user, host and process, the flow run if any, and a credential's fingerprint if one was used."""
    who: dict[str, object] = {"os_user": os_user(), "host": socket.gethostname(), "pid": os.getpid()}
    run = flow_run()
    if run:
        who["flow_run"] = run
    if credential:
        who["credential"] = fingerprint(credential)
    return who
