"""Telemetry switched off: the endpoint's calls, and the controller's writes, recording nothing."""

from __future__ import annotations

from nerops.telemetry.records import RequestRecord


class DisabledTelemetry:
    """The endpoint's telemetry calls, recording nothing (``NEROPS_TELEMETRY_ENABLED=false``).

    For measuring what monitoring costs (``bench/serving.py``) and nothing else: with it, every alert
    rule and the rollout judge read ``error`` (no watermark), never ``healthy``. The rollout controller's
    writer too (:func:`nerops.controller.telemetry.controller_telemetry`): ``rollout_stuck`` then sees no rollout.
    """

    def record_request(self, record: RequestRecord) -> None:
        return None

    def record_documents(self, **kwargs: object) -> None:
        return None

    def record_agreement(self, **kwargs: object) -> None:
        return None

    def record_mirror_dropped(self, **kwargs: object) -> None:
        return None

    def write(self, points: object) -> int:
        return 0

    def flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self) -> None:
        return None
