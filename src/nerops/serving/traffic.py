"""Traffic generator: replay CVs from a dotin zip against an endpoint at a set rate and concurrency.

Prints a progress line while it runs and, at the end, what it sent and what came back per
deployment (the ``azureml-model-deployment`` header of each answer names who answered).
The counts it returns are what the client saw: tests compare them with the endpoint's telemetry.
"""

from __future__ import annotations

import asyncio
import random
import statistics
import sys
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from nerops.data import read_corpus

PIN_HEADER = "azureml-model-deployment"


@dataclass
class TrafficReport:
    sent: int = 0
    seconds: float = 0.0
    by_deployment: Counter[str] = field(default_factory=Counter)
    status_by_deployment: dict[str, Counter[int]] = field(default_factory=lambda: defaultdict(Counter))
    latencies_ms: list[float] = field(default_factory=list)
    transport_errors: int = 0

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def summary(self) -> str:
        lines = [f"sent {self.sent} requests in {self.seconds:.1f} s ({self.rate:.1f}/s)"]
        if self.latencies_ms:
            ordered = sorted(self.latencies_ms)
            p95 = ordered[int(0.95 * (len(ordered) - 1))]
            lines[0] += f", latency p50 {statistics.median(ordered):.0f} ms, p95 {p95:.0f} ms"
        for name in sorted(self.by_deployment):
            share = 100 * self.by_deployment[name] / max(self.sent, 1)
            statuses = ", ".join(f"{code}: {n}" for code, n in sorted(self.status_by_deployment[name].items()))
            lines.append(f"  {name or '(none)':<16} {self.by_deployment[name]:>6}  ({share:4.1f} %)  {statuses}")
        if self.transport_errors:
            lines.append(f"  no answer (connection failed): {self.transport_errors}")
        return "\n".join(lines)


def load_texts(path: Path) -> list[str]:
    return [doc.text for doc in read_corpus(path)]


async def send_traffic(
    url: str,
    key: str,
    texts: list[str],
    *,
    requests: int,
    concurrency: int = 4,
    rate: float | None = None,
    deployment: str | None = None,
    progress: bool = True,
    timeout: float = 60.0,
    seed: int | None = None,
) -> TrafficReport:
    """Send ``requests`` requests (each a text drawn at random from ``texts``), at most ``rate`` per second."""
    report = TrafficReport()
    rng = random.Random(seed)
    queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=concurrency * 2)
    headers = {"Authorization": f"Bearer {key}"}
    if deployment:
        headers[PIN_HEADER] = deployment
    started = time.perf_counter()

    async def producer() -> None:
        for i in range(requests):
            if rate:
                delay = started + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
            await queue.put(texts[rng.randrange(len(texts))])
        for _ in range(concurrency):
            await queue.put(None)

    async def consumer(client: httpx.AsyncClient) -> None:
        while (text := await queue.get()) is not None:
            sent_at = time.perf_counter()
            try:
                response = await client.post("/score", json={"text": text}, headers=headers)
            except httpx.TransportError:
                report.transport_errors += 1
                report.sent += 1
                continue
            report.latencies_ms.append(1000 * (time.perf_counter() - sent_at))
            name = response.headers.get(PIN_HEADER, "")
            report.sent += 1
            report.by_deployment[name] += 1
            report.status_by_deployment[name][response.status_code] += 1

    async def show() -> None:
        while True:
            await asyncio.sleep(1.0)
            elapsed = time.perf_counter() - started
            parts = " ".join(f"{k or '-'}={v}" for k, v in sorted(report.by_deployment.items()))
            print(f"\r  {report.sent}/{requests} requests, {report.sent / elapsed:.1f}/s  {parts}   ",
                  end="", file=sys.stderr, flush=True)  # fmt: skip

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        ticker = asyncio.create_task(show()) if progress else None
        await asyncio.gather(producer(), *(consumer(client) for _ in range(concurrency)))
        if ticker:
            ticker.cancel()
            print(file=sys.stderr)
    report.seconds = time.perf_counter() - started
    return report


def run_traffic(url: str, key: str, texts: list[str], **kwargs) -> TrafficReport:
    return asyncio.run(send_traffic(url, key, texts, **kwargs))


@dataclass
class SteadyTraffic:
    """Live traffic at a fixed ``rate`` a second from two client threads until :meth:`close`, the texts in turn;
    every answer kept in ``log``: (sent, answered, deployment, status, latency ms). Status 0: no answer."""

    url: str
    key: str
    texts: list[str]
    rate: float = 10.0
    log: list[tuple[float, float, str, int, float]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def start(self) -> None:
        self.threads = [threading.Thread(target=self._send, args=(i,), daemon=True) for i in range(2)]
        for thread in self.threads:
            thread.start()

    def _send(self, worker: int) -> None:
        period = 2.0 / self.rate
        headers = {"Authorization": f"Bearer {self.key}"}
        with httpx.Client(base_url=self.url, timeout=30.0) as client:
            n, start = worker, time.time() + worker * period / 2
            while not self.stop.is_set():
                due = start + (n // 2) * period
                time.sleep(max(0.0, due - time.time()))
                sent = time.time()
                try:
                    response = client.post("/score", json={"text": self.texts[n % len(self.texts)]}, headers=headers)
                    answered = time.time()
                    name = response.headers.get(PIN_HEADER, "")
                    self.log.append((sent, answered, name, response.status_code, 1000 * (answered - sent)))
                except httpx.TransportError:
                    self.log.append((sent, time.time(), "", 0, 0.0))
                n += 2

    def __enter__(self) -> SteadyTraffic:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def answered_by(self, deployment: str, since: float = 0.0) -> int:
        return sum(1 for sent, _, name, _, _ in list(self.log) if name == deployment and sent >= since)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(35)
