"""What every task shares: who acts (for the ledger) and which errors are worth a retry."""

from __future__ import annotations

from prefect import Task
from prefect.client.schemas.objects import TaskRun
from prefect.runtime import flow_run
from prefect.states import State

from nerops.errors import TransientBackendError
from nerops.settings import get_settings


def actor() -> str:
    """``prefect:<flow run name> (user@host)`` inside a flow run, else ``user@host``."""
    who = get_settings().who
    name = flow_run.get_name()
    return f"prefect:{flow_run.get_flow_name()}/{name} ({who})" if name else who


def transient_only(task: Task, task_run: TaskRun, state: State) -> bool:
    """Retry only what a retry can fix: backend hiccups, timeouts, dropped connections."""
    try:
        state.result()
    except (TransientBackendError, TimeoutError, ConnectionError):
        return True
    except Exception:
        return False
    return False
