"""Per-document behaviour of the served model, recorded once through the real local endpoint.

``record`` trains, registers, gates and approves the ``quick`` model in a fresh state folder (as the
serving bench does), deploys it on the local endpoint with 100 % traffic, and sends every CV of the
set-aside test set and the 60 longest training CVs, one CV per request, ``passes`` times each, at
concurrency 2 (one HTTP connection per concurrent request). Each request becomes one row of counts:
its source, the document's index within that source, its length, the latency, the HTTP status, the
number of entities and their count per label. No text, file name or entity text is kept: the file
(``bench/data/documents.json.gz``) is committed, so a simulation bench can resample real,
overdispersed per-document data without the zips.

``load`` reads it back as numpy arrays (:class:`Documents`).

The endpoint does not return its own inference time (neither a header nor a body field: the worker's
answer is ``{"entities", "model_version", "deployment"}`` and the endpoint keeps its latency for
telemetry), so the latency recorded is the client's round trip (``meta.latency_kind``).
"""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import platform
import random
import tempfile
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

DEFAULT = Path(__file__).parent / "data" / "documents.json.gz"
RECORD_COMMAND = "python -m bench documents"
FORMAT = 1
SOURCES = ("test", "train_long")
LONG_TRAIN = 60  # the longest training CVs, by characters
CONCURRENCY = 2
WARMUP_PER_CONNECTION = 3  # requests per connection before recording (not recorded)
PROGRESS_EVERY = 50
ENDPOINT = "bench-documents"
DEPLOYMENT = "blue"
LATENCY_KIND = "client_round_trip"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "resumes"
console = Console()


@dataclass(frozen=True)
class _Job:
    pass_index: int
    source: str
    doc: int
    chars: int
    body: bytes = field(repr=False)


def record(out: Path = DEFAULT, passes: int = 3) -> Path:
    """Record per-request counts through the real local endpoint into ``out`` (gzip-compressed JSON)."""
    from bench.serving import _prepare

    if passes < 1:
        raise ValueError(f"passes must be at least 1, not {passes}")
    saved = {name: os.environ.get(name) for name in ("NEROPS_STATE_DIR", "NEROPS_DATA_DIR")}
    if not os.environ.get("NEROPS_DATA_DIR") and SHARED_DATA.is_dir():
        os.environ["NEROPS_DATA_DIR"] = str(SHARED_DATA)
    started = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="nerops-bench-documents-") as tmp:
            version, _ = _prepare(Path(tmp))  # sets NEROPS_STATE_DIR to the fresh folder
            from nerops.dataset import load_dataset
            from nerops.serving.client import LocalEndpoint
            from nerops.settings import get_settings

            settings = get_settings()
            dataset = load_dataset(settings)
            texts = {
                "test": [doc.text for doc in dataset.test],
                "train_long": sorted((doc.text for doc in dataset.train), key=len, reverse=True)[:LONG_TRAIN],
            }
            workers = os.cpu_count() or 2
            console.print(f"starting the local endpoint, deployment {DEPLOYMENT} ({workers} workers) ...")
            endpoint = LocalEndpoint.start(settings, ENDPOINT)
            try:
                client = endpoint.client()
                try:
                    client.create_deployment(DEPLOYMENT, version, instance_count=workers)
                    client.set_traffic({DEPLOYMENT: 100})
                finally:
                    client.close()
                jobs = _jobs(texts, passes)
                console.print(f"recording {len(jobs)} requests at concurrency {CONCURRENCY} ...")
                sending = time.monotonic()
                rows = asyncio.run(_send_all(endpoint.url, endpoint.key, jobs, texts["test"][0]))
                sending = time.monotonic() - sending
            finally:
                endpoint.stop()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    labels = _labels(rows)
    meta = {
        "format": FORMAT,
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "model": {"version": version, "config": "quick", "dataset_version": dataset.version},
        "endpoint": {"kind": "nerops local endpoint", "deployment_workers": workers, "traffic": {DEPLOYMENT: 100}},
        "passes": passes,
        "concurrency": CONCURRENCY,
        "connections": "one httpx connection per concurrent request",
        "warmup_requests": CONCURRENCY * WARMUP_PER_CONNECTION,
        "order": "each pass sends every document once, in a random order seeded by the pass index",
        "latency_kind": LATENCY_KIND,
        "latency_note": "the endpoint returns no inference time of its own: client-side round trip of one POST "
        "/score on a kept-alive connection (request body encoded beforehand; response body read)",
        "sources": {
            "test": "every CV of the set-aside test set; doc = its index in load_dataset(settings).test",
            "train_long": f"the {LONG_TRAIN} longest training CVs by characters; doc = rank by length (0 = longest)",
        },
        "counts": {
            source: {"documents": len(texts[source]), "requests": sum(row["source"] == source for row in rows)}
            for source in SOURCES
        },
        "labels": list(labels),
        "fields": {
            "labels": "count per label, non-zero labels only",
            "empty": "a 200 answer with no entity",
            "status": "HTTP status; 0 for a transport failure (no answer)",
        },
        "recording_seconds": round(sending, 1),
        "total_seconds": round(time.monotonic() - started, 1),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".tmp")
    data = json.dumps({"meta": meta, "requests": rows}, separators=(",", ":")).encode()
    partial.write_bytes(gzip.compress(data, mtime=0))
    partial.replace(out)
    return out


def _jobs(texts: dict[str, list[str]], passes: int) -> list[_Job]:
    base = [
        (source, doc, len(text), json.dumps({"text": text}).encode())
        for source in SOURCES
        for doc, text in enumerate(texts[source])
    ]
    jobs = []
    for pass_index in range(passes):
        order = list(range(len(base)))
        random.Random(pass_index).shuffle(order)
        jobs.extend(_Job(pass_index, *base[i]) for i in order)
    return jobs


async def _send_all(url: str, key: str, jobs: list[_Job], warmup_text: str) -> list[dict[str, object]]:
    queue, rows = deque(jobs), []
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    warmup = json.dumps({"text": warmup_text}).encode()
    started, non_ok = time.monotonic(), 0

    async def connection() -> None:
        nonlocal non_ok
        limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
        async with httpx.AsyncClient(base_url=url, headers=headers, timeout=120, limits=limits) as client:
            for _ in range(WARMUP_PER_CONNECTION):
                (await client.post("/score", content=warmup)).raise_for_status()
            while queue:
                job = queue.popleft()
                t0 = time.perf_counter()
                try:
                    response = await client.post("/score", content=job.body)
                    latency_ms = 1000 * (time.perf_counter() - t0)
                    status = response.status_code
                    entities = response.json()["entities"] if status == 200 else []
                except httpx.TransportError:
                    latency_ms, status, entities = 1000 * (time.perf_counter() - t0), 0, []
                labels = Counter(str(entity["label"]) for entity in entities)
                rows.append(
                    {
                        "pass": job.pass_index,
                        "source": job.source,
                        "doc": job.doc,
                        "chars": job.chars,
                        "latency_ms": round(latency_ms, 3),
                        "status": status,
                        "entities": len(entities),
                        "labels": dict(sorted(labels.items())),
                        "empty": status == 200 and not entities,
                    }
                )
                non_ok += status != 200
                if len(rows) % PROGRESS_EVERY == 0 or len(rows) == len(jobs):
                    rate = len(rows) / (time.monotonic() - started)
                    console.print(f"  {len(rows)}/{len(jobs)} requests, {rate:.1f}/s, {non_ok} not 200")

    await asyncio.gather(*(connection() for _ in range(CONCURRENCY)))
    return rows


def _labels(rows: list[dict[str, object]]) -> tuple[str, ...]:
    from nerops.data import LABELS

    seen = {label for row in rows for label in row["labels"]}
    return (*LABELS, *sorted(seen - set(LABELS)))


@dataclass(frozen=True, eq=False)
class Documents:
    """One row per recorded request, as read-only numpy arrays; ``meta`` is the file's meta block."""

    source: np.ndarray  # int8 codes into ``sources``
    doc: np.ndarray  # index of the document within its source
    pass_index: np.ndarray
    chars: np.ndarray
    latency_ms: np.ndarray
    status: np.ndarray
    entities: np.ndarray
    label_counts: np.ndarray  # (requests, len(labels))
    labels: tuple[str, ...]
    empty: np.ndarray
    meta: dict
    sources: tuple[str, ...] = SOURCES

    def __len__(self) -> int:
        return len(self.source)

    def of(self, source: str) -> np.ndarray:
        """The boolean mask of one source's rows."""
        return self.source == self.sources.index(source)


def load(path: Path = DEFAULT) -> Documents:
    """Read a recording made by :func:`record`."""
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: record it with `{RECORD_COMMAND}` (a few minutes; needs the dotin zips)"
        )
    data = json.loads(gzip.decompress(path.read_bytes()))
    meta, rows = data["meta"], data["requests"]
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path} has format {meta.get('format')!r}, not {FORMAT}: re-record with `{RECORD_COMMAND}`")
    labels = tuple(meta["labels"])
    column = {label: i for i, label in enumerate(labels)}
    counts = np.zeros((len(rows), len(labels)), dtype=np.int32)
    for i, row in enumerate(rows):
        for label, n in row["labels"].items():
            counts[i, column[label]] = n

    def array(name: str, dtype) -> np.ndarray:
        return np.array([row[name] for row in rows], dtype=dtype)

    documents = Documents(
        source=np.array([SOURCES.index(row["source"]) for row in rows], dtype=np.int8),
        doc=array("doc", np.int32),
        pass_index=array("pass", np.int16),
        chars=array("chars", np.int64),
        latency_ms=array("latency_ms", np.float64),
        status=array("status", np.int16),
        entities=array("entities", np.int32),
        label_counts=counts,
        labels=labels,
        empty=array("empty", bool),
        meta=meta,
    )
    for value in vars(documents).values():
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    return documents


def summary(documents: Documents) -> Table:
    """Per source: requests, latency (ms), entities per document (200 answers), empty and non-200 shares."""
    meta = documents.meta
    table = Table(
        title=f"quick v{meta['model']['version']} through the local endpoint: {meta['passes']} passes, "
        f"concurrency {meta['concurrency']}, latency = {meta['latency_kind']} (ms)"
    )
    columns = ("source", "docs", "requests", "mean", "p50", "p95", "entities/doc", "sd", "empty", "not 200")
    for column in columns:
        table.add_column(column, justify="left" if column == "source" else "right")
    for source in documents.sources:
        mask = documents.of(source)
        ok = mask & (documents.status == 200)
        latency, entities = documents.latency_ms[mask], documents.entities[ok]
        table.add_row(
            source, str(meta["counts"][source]["documents"]), str(int(mask.sum())),
            f"{latency.mean():.1f}", f"{np.percentile(latency, 50):.1f}", f"{np.percentile(latency, 95):.1f}",
            f"{entities.mean():.1f}", f"{entities.std(ddof=1):.1f}",
            f"{documents.empty[ok].mean():.1%}", f"{(~ok[mask]).mean():.1%}",
        )  # fmt: skip
    return table


def _unstable(documents: Documents) -> int:
    """Documents whose entity count differed between passes (the model is deterministic: expected 0)."""
    ok = documents.status == 200
    seen: dict[tuple[int, int], set[int]] = {}
    for source, doc, n in zip(documents.source[ok], documents.doc[ok], documents.entities[ok], strict=True):
        seen.setdefault((int(source), int(doc)), set()).add(int(n))
    return sum(len(counts) > 1 for counts in seen.values())


def main() -> None:
    path = record(DEFAULT)
    documents = load(path)
    out = console if console.is_terminal else Console(width=120)  # a log file: keep the table whole
    out.print(summary(documents))
    meta = documents.meta
    out.print(
        f"written: {path} ({path.stat().st_size / 1024:.1f} KiB, {len(documents)} requests); recording took "
        f"{meta['recording_seconds']:.0f} s, {meta['total_seconds']:.0f} s with training; "
        f"documents whose entity count changed between passes: {_unstable(documents)}"
    )


if __name__ == "__main__":
    main()
