"""The endpoint-control port: what a rollout controller needs of an online endpoint.

``EndpointClient`` (the local endpoint over HTTP) implements it; an Azure ML managed online endpoint
adapter will implement it again; :func:`nerops.serving.factory.endpoint_control` picks one by
settings. Every write says who asks, why and for which rollout (:class:`Change`), and a traffic
change names the ETag of the state its decision was based on, so a concurrent change is refused
(412) instead of overwritten. Creating and scaling a deployment are long-running operations:
``begin_*`` returns once the endpoint accepted it, ``wait_deployment`` polls it to Succeeded (or
raises its error), and ``create_deployment`` / ``scale_deployment`` do both. A scale changes only
the number of instances, so it is allowed while the deployment takes traffic; the instances it
had serve throughout, and a scale-up that fails leaves them serving.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class Change:
    """Who asks for a change, why, and the rollout it belongs to (its correlation id)."""

    actor: str
    reason: str
    correlation_id: str | None = None


@dataclass(frozen=True)
class EndpointView:
    """The endpoint's state (deployments, traffic, mirror, workers) and its ETag."""

    state: dict
    etag: str


class EndpointControl(Protocol):
    def read(self) -> EndpointView: ...

    def deployment(self, name: str) -> dict: ...

    def begin_create_deployment(
        self, name: str, version: str, *, instance_count: int = 1, change: Change | None = None
    ) -> dict: ...

    def wait_deployment(self, name: str, *, deadline_s: float = 300.0) -> dict: ...

    def create_deployment(
        self, name: str, version: str, *, instance_count: int = 1, change: Change | None = None
    ) -> dict: ...

    def begin_scale_deployment(self, name: str, instance_count: int, *, change: Change | None = None) -> dict: ...

    def scale_deployment(self, name: str, instance_count: int, *, change: Change | None = None) -> dict: ...

    def set_traffic(
        self,
        traffic: dict[str, int],
        mirror: dict[str, int] | None = None,
        *,
        if_match: str | None = None,
        change: Change | None = None,
    ) -> dict: ...

    def delete_deployment(self, name: str, *, change: Change | None = None) -> dict: ...
