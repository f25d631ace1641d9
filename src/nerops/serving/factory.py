"""The endpoint-control factory: the port's implementation for the settings (today: the local endpoint)."""

from __future__ import annotations

import json

from nerops.errors import ConfigurationError
from nerops.serving.client import EndpointClient
from nerops.serving.credentials import control_key
from nerops.serving.port import EndpointControl
from nerops.settings import Settings


def endpoint_control(settings: Settings, name: str | None = None) -> EndpointControl:
    """The control client of endpoint ``name`` (default: the registered model's production endpoint)."""
    name = name or settings.endpoint_of()
    folder = settings.state / "endpoints" / name
    url_file = folder / "endpoint.url"
    if not url_file.exists():
        raise ConfigurationError(f"endpoint {name!r} has never run here: start it with `nerops endpoint serve`")
    keys = folder / "keys.json"
    scoring = json.loads(keys.read_text())["primary"] if keys.exists() else ""
    return EndpointClient(url_file.read_text().strip(), scoring, control_key=control_key(settings))
