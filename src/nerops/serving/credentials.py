"""The endpoint's two kinds of credential: scoring keys (callers) and control credentials (operators).

Scoring keys (``keys.json`` in the endpoint's folder, primary and secondary as on Azure ML) only score:
every control route answers them 403. A control credential changes the endpoint; the CLI and the flows
use it, and the ledger records its fingerprint, never the secret. It comes from the settings
``NEROPS_CONTROL_KEY`` and, while rotating, ``NEROPS_CONTROL_KEY_PREVIOUS`` (both valid at once); with
neither set (the local platform), one is generated once into ``control-key`` in the state folder
(mode 0600), where the endpoint and the CLI both find it.
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from nerops.settings import Settings

LOCAL_KEY_FILE = "control-key"


def control_keys(settings: Settings) -> list[str]:
    """The valid control credentials, the current one first."""
    given = [key.get_secret_value() for key in (settings.control_key, settings.control_key_previous) if key]
    return [key for key in given if key] or [generated_secret(settings.state / LOCAL_KEY_FILE)]


def control_key(settings: Settings) -> str:
    """The credential to send: the current one."""
    return control_keys(settings)[0]


def generated_secret(path: Path) -> str:
    """The secret in ``path``, made once (random, mode 0600; safe when two processes make it at once)."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it first
            return path.read_text().strip()
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(32))
    return path.read_text().strip()


def bearer(authorization: str | None) -> str | None:
    scheme, _, token = (authorization or "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


class ControlKeys:
    """Checks a request's ``Authorization: Bearer`` against the control credentials, in constant time."""

    def __init__(self, keys: list[str]) -> None:
        if not keys:
            raise ValueError("at least one control credential is needed")
        self._keys = [key.encode() for key in keys]

    def match(self, authorization: str | None) -> str | None:
        """The credential used, if it is a valid one."""
        token = bearer(authorization)
        if token is None:
            return None
        given = token.encode()
        found = [hmac.compare_digest(given, key) for key in self._keys]  # every key compared, always
        return token if any(found) else None
