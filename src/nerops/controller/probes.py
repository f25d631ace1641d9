"""Probe traffic for a quiet service: resumes sent on purpose to both deployments of a rollout.

Each probe is one resume pinned to the candidate (``azureml-model-deployment``) with the stable deployment
named as its pair (``x-nerops-probe-pair``), traffic class ``probe``: the endpoint has both answer it,
returns the candidate's answer, and records both answers' telemetry as ``probe`` and their agreement on the
candidate's arm (nerops.serving.endpoint). Probes never count as live requests: the judge pairs
candidate probes with stable probes (nerops.rollout.strata), the alert rules and the dashboard read live.

When: the profile's ``probes`` (rollouts/policy.yaml): at ``rate`` a second while the judge lacks its
minimum samples (``when: short``: the last verdict was ``no_data``) or whenever the candidate is past its
readiness step (``when: always``); never during readiness or after the rollout ended. :func:`wanted` is
that rule, pure; :class:`Prober` is the thread that sends.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from nerops.errors import ConfigurationError
from nerops.rollout.machine import ENDED
from nerops.rollout.policy import Probes
from nerops.serving.endpoint import CLASS_HEADER, PAIR_HEADER, PIN_HEADER


def wanted(probes: Probes | None, step_kind: str, phase: str, verdict: str | None) -> bool:
    """Whether the rollout sends probes until its next look (see the module docstring)."""
    if probes is None or step_kind == "readiness" or phase in ENDED:
        return False
    return probes.when == "always" or verdict == "no_data"


def probe_texts(probes: Probes, default: Path | None) -> list[str]:
    """The probe resumes: ``probes.folder`` (a zip or a folder of ``*.xml`` CVs) or ``default`` (the test CVs)."""
    from nerops.data import read_corpus

    source = Path(probes.folder).expanduser() if probes.folder else default
    if source is None:
        raise ConfigurationError("probe traffic needs resumes: set probes.folder in the rollout profile")
    try:
        texts = [doc.text for doc in read_corpus(source)]
    except Exception as exc:
        raise ConfigurationError(f"probe resumes from {source}: {exc}") from exc
    if not texts:
        raise ConfigurationError(f"probe resumes from {source}: no *.xml CV in it")
    return texts


@dataclass
class ProbeCounts:
    sent: int = 0
    answered: int = 0  # 200 from the candidate (the stable's answer is in the telemetry)
    failed: int = 0  # any other status, or no answer

    def describe(self) -> str:
        return f"{self.sent} probes sent, {self.answered} answered 200, {self.failed} failed"


class Prober:
    """Sends probe pairs at ``rate`` a second while :meth:`aim` has set a target; one request at a time."""

    def __init__(self, url: str, key: str, texts: list[str], probes: Probes, *, timeout: float = 30.0) -> None:
        if not texts:
            raise ConfigurationError("a prober needs at least one resume")
        self.texts, self.probes, self.rate = texts, probes, probes.rate
        self.counts = ProbeCounts()
        self._http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)
        self._target: tuple[str, str] | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._next = 0
        self._thread = threading.Thread(target=self._run, name="nerops-prober", daemon=True)

    def __enter__(self) -> Prober:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def aim(self, target: tuple[str, str] | None) -> None:
        """``(candidate, stable)`` to probe both, or None to stop sending."""
        with self._lock:
            self._target = target

    def follow(self, step_kind: str, phase: str, verdict: str | None, candidate: str, stable: str | None) -> bool:
        """Aim at the rollout's two deployments when :func:`wanted` says so; return whether it probes now."""
        on = wanted(self.probes, step_kind, phase, verdict) and stable is not None
        self.aim((candidate, stable) if on else None)
        return on

    @property
    def target(self) -> tuple[str, str] | None:
        with self._lock:
            return self._target

    def send_one(self, candidate: str, stable: str) -> int | None:
        """One probe pair; the candidate's status (None: no answer)."""
        text = self.texts[self._next % len(self.texts)]
        self._next += 1
        headers = {PIN_HEADER: candidate, CLASS_HEADER: "probe", PAIR_HEADER: stable}
        self.counts.sent += 1
        try:
            status = self._http.post("/score", json={"text": text}, headers=headers).status_code
        except httpx.HTTPError:
            status = None
        if status == 200:
            self.counts.answered += 1
        else:
            self.counts.failed += 1
        return status

    def _run(self) -> None:
        period = 1.0 / self.rate
        due = time.monotonic()
        while not self._stop.is_set():
            target = self.target
            if target is None:
                due = time.monotonic()
                self._stop.wait(0.1)
                continue
            self.send_one(*target)
            due += period
            self._stop.wait(max(0.0, due - time.monotonic()))

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=35)
        self._http.close()
