"""The ledger's head kept in a tag of the registered model: an anchor outside the ledger file, which may lag.

After a failed write, further writes fail at once for a quiet period (until it passes or a read
succeeds), so that appends (traffic changes, rollbacks) during an outage do not each wait for the
registry's timeouts; the ledger catches the anchor up once it answers (``Ledger.catch_up``).
"""

from __future__ import annotations

import time

from nerops.errors import TransientBackendError
from nerops.ledger import Head
from nerops.registry import ModelRegistry

QUIET_SECONDS = 30.0


class RegistryAnchor:
    """Keeps the ledger's head in a tag of the registered model: outside the ledger file."""

    def __init__(self, registry: ModelRegistry, *, quiet_seconds: float = QUIET_SECONDS) -> None:
        self.registry = registry
        self.quiet_seconds = quiet_seconds
        self._quiet_until = 0.0

    def read(self) -> Head | None:
        value = self.registry.read_anchor()
        self._quiet_until = 0.0  # it answered: writes may try again
        if not value:
            return None
        seq, _, digest = value.partition(":")
        return Head(int(seq), digest)

    def write(self, head: Head) -> None:
        if time.monotonic() < self._quiet_until:
            raise TransientBackendError("the registry failed moments ago: not waiting for it again (it catches up)")
        try:
            self.registry.write_anchor(f"{head.seq}:{head.hash}")
        except Exception:
            self._quiet_until = time.monotonic() + self.quiet_seconds
            raise
        self._quiet_until = 0.0
