"""A :class:`~nerops.controller.run.Controller` from settings: the ledger and registry, the record store, the
endpoint's control client, the metrics source and the plan of the configured profile."""

from __future__ import annotations

from nerops.controller.records import RecordStore
from nerops.controller.run import Controller
from nerops.controller.telemetry import controller_telemetry
from nerops.rollout.plan import build_plan
from nerops.rollout.policy import load_policy, policy_sha256
from nerops.settings import Settings, get_settings


def record_store(settings: Settings | None = None) -> RecordStore:
    return RecordStore((settings or get_settings()).state / "rollouts")


def controller(
    endpoint: str | None,
    owner: str,
    *,
    settings: Settings | None = None,
    metrics: bool = True,
    lease_s: float | None = None,
) -> Controller:
    """The controller of ``endpoint`` (default: the model's production endpoint) acting as ``owner``; its
    governance is that of the registered model the endpoint serves (``NEROPS_ENDPOINTS``).

    ``metrics=False`` builds one without a metrics source: what a rollback needs, and all it needs. Either way it
    writes its own telemetry (phase, weight, time of each step) into the state folder's store, opened at the
    first write (:mod:`nerops.controller.telemetry`).
    """
    from nerops.lifecycle import open_governance
    from nerops.serving.factory import endpoint_control

    settings = settings or get_settings()
    name = endpoint or settings.endpoint_of()
    settings = settings.for_endpoint(name)  # another endpoint may serve another registered model
    policy, text = load_policy(settings.rollout_policy)
    plan = build_plan(policy, settings.rollout_profile, policy_sha256=policy_sha256(text))
    source = None
    if metrics:
        from nerops.telemetry import TelemetryStore

        source = TelemetryStore(settings.state / "telemetry" / "telemetry.db")
    lease = lease_s if lease_s is not None else plan.lease
    return Controller(
        open_governance(settings, actor=owner),
        record_store(settings),
        endpoint_control(settings, name),
        source,
        plan,
        text,
        owner,
        name,
        lease_s=lease,
        telemetry=controller_telemetry(settings),  # its own metrics, at every committed step (rollback too)
    )
