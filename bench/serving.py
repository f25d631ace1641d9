"""Serving benchmarks, measured side by side in one run on the same machine and the same model version.

(a) ``telemetry``: the scoring path (validate, predict, summarise) with telemetry on against off,
    interleaved in rounds over the same CVs; the ratio is what monitoring costs in throughput.
(a') ``telemetry_end_to_end``: two identical endpoints, telemetry on and off, loaded in turn at
    concurrency 8 in interleaved rounds; the median ratio with a bootstrap interval.
(b) ``throughput``: the local endpoint (one worker process per core) at concurrency 1, 4 and 8
    against ``mlflow models serve`` of the same registered version with the same number of worker
    processes (and, a second row, its default single worker), driven by the same load generator
    (whose CPU use is reported), and against as many plain processes predicting in a loop.

Writes bench/results/serving.json and prints tables with the ratios.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

RESULTS = Path(__file__).parent / "results" / "serving.json"
CONCURRENCY = (1, 4, 8)
REQUESTS = 240
LOAD_CPU: list[float] = []  # the load generator's CPU use (cores) per measurement
console = Console()


def _prepare(state: Path) -> tuple[str, list[str]]:
    """Train the quick model into a fresh registry, gate and approve it: the version every server serves."""
    os.environ["NEROPS_STATE_DIR"] = str(state)
    from nerops import lifecycle
    from nerops.dataset import load_dataset
    from nerops.settings import get_settings

    console.print("training and registering the quick model ...")
    training = lifecycle.train_candidate("quick")
    evaluation = lifecycle.evaluate_candidate(training["model_dir"])
    version = lifecycle.register_candidate(training["model_dir"], training, evaluation)
    assert lifecycle.gate_version(version)["passed"]
    lifecycle.approve_version(version, "benchmark")  # stage=prod: what a deployment may serve
    texts = [doc.text for doc in load_dataset(get_settings()).test]
    return version, texts


def bench_telemetry(version: str, texts: list[str], rounds: int = 15) -> dict[str, object]:
    """Rounds of on/off pairs (order alternating) over the same CVs; the median of the pairs' ratios.

    Also the direct measure: time spent inside the telemetry calls as a share of the whole.
    """
    from nerops.lifecycle import open_governance
    from nerops.serving.scoring import parse_request, score
    from nerops.settings import get_settings
    from nerops.telemetry import RequestRecord, local_telemetry

    extractor = open_governance().load(version)
    bodies = [json.dumps({"text": text}).encode() for text in texts]
    telemetry = local_telemetry(
        get_settings().state / "telemetry" / "bench.db", endpoint="bench", export_interval_s=1.0
    )
    inside = [0.0]

    def once(measure: bool) -> float:
        started = time.perf_counter()
        for body in bodies:
            t0 = time.perf_counter()
            texts_, batch = parse_request(body, "application/json")
            scored = score(texts_, batch, extractor, model_version=version, deployment="blue")
            if measure:
                t1 = time.perf_counter()
                telemetry.record_request(RequestRecord("bench", "blue", version, 200, 1000 * (t1 - t0)))
                telemetry.record_documents(deployment="blue", model_version=version, documents=scored.signals)
                inside[0] += time.perf_counter() - t1
        return time.perf_counter() - started

    once(True), once(False)  # warm up both paths
    inside[0] = 0.0
    ratios, on_total, off_total = [], 0.0, 0.0
    for i in range(rounds):
        first, second = (True, False) if i % 2 else (False, True)
        a, b = once(first), once(second)
        on, off = (a, b) if first else (b, a)
        on_total, off_total = on_total + on, off_total + off
        ratios.append(off / on)  # throughput on / throughput off
    telemetry.shutdown()
    ratio = statistics.median(ratios)
    n = rounds * len(bodies)
    return {
        "documents_per_round": len(bodies),
        "rounds": rounds,
        "telemetry_on_per_s": round(n / on_total, 2),
        "telemetry_off_per_s": round(n / off_total, 2),
        "ratio_on_over_off": round(ratio, 4),
        "cost_percent": round(100 * (1 - ratio), 2),
        "direct_cost_percent": round(100 * inside[0] / on_total, 3),
        "telemetry_us_per_request": round(1e6 * inside[0] / n, 1),
        "target_cost_percent_at_most": 1.0,
    }


def bench_in_process(version: str, texts: list[str], seconds: float = 10.0) -> float:
    from nerops.lifecycle import open_governance

    extractor = open_governance().load(version)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        extractor.predict(texts[done % len(texts)])
        done += 1
    return done / (time.perf_counter() - started)


def _predict_for(model_dir: str, texts: list[str], seconds: float, start_at: float) -> int:
    """One process of :func:`bench_processes`: load, wait for the common start, predict for ``seconds``."""
    from nerops.model.pipeline import Extractor

    extractor = Extractor.load(Path(model_dir))
    extractor.predict(texts[0])
    while time.time() < start_at:
        time.sleep(0.01)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        extractor.predict(texts[done % len(texts)])
        done += 1
    return done


def bench_processes(version: str, texts: list[str], processes: int, seconds: float = 10.0) -> float:
    """``processes`` plain Python processes predicting in a loop at once: the ceiling for any server."""
    from concurrent.futures import ProcessPoolExecutor

    from nerops.lifecycle import open_governance

    with tempfile.TemporaryDirectory(prefix="nerops-bench-model-") as tmp:
        model_dir = open_governance().check_lineage(version, Path(tmp))
        start_at = time.time() + 15  # after every process has loaded the model
        with ProcessPoolExecutor(processes) as pool:
            futures = [pool.submit(_predict_for, str(model_dir), texts, seconds, start_at) for _ in range(processes)]
            return sum(f.result() for f in futures) / seconds


async def _load(url: str, make_body, texts: list[str], *, concurrency: int, requests: int, headers: dict) -> float:
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)
    failures = 0

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal failures
        while not queue.empty():
            i = queue.get_nowait()
            response = await client.post(url, json=make_body(texts[i % len(texts)]), headers=headers)
            failures += response.status_code != 200

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=120, limits=limits) as client:
        await client.post(url, json=make_body(texts[0]), headers=headers)  # warm up
        started, cpu = time.perf_counter(), time.process_time()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    if failures:
        raise RuntimeError(f"{failures} of {requests} requests to {url} failed")
    LOAD_CPU.append(cpu / elapsed)
    return requests / elapsed


def _serve_mlflow(version: str, port: int, workers: int) -> subprocess.Popen:
    from nerops.settings import get_settings

    settings = get_settings()
    bin_dir = Path(sys.executable).parent  # mlflow starts `uvicorn` from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": settings.tracking_uri,
        "MLFLOW_REGISTRY_URI": settings.tracking_uri,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    mlflow = bin_dir / "mlflow"
    return subprocess.Popen(
        [str(mlflow), "models", "serve", "-m", f"models:/{settings.registered_model}/{version}",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip


def _wait(url: str, server: subprocess.Popen, seconds: float = 180) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server for {url} exited with code {server.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up")


def _mlflow_rows(version: str, texts: list[str], workers: int) -> dict[int, float]:
    from nerops.serving.client import free_port

    out: dict[int, float] = {}
    port = free_port()
    server = _serve_mlflow(version, port, workers)
    try:
        _wait(f"http://127.0.0.1:{port}/ping", server)
        for c in CONCURRENCY:
            out[c] = asyncio.run(
                _load(f"http://127.0.0.1:{port}/invocations",
                      lambda t: {"dataframe_split": {"columns": ["text"], "data": [[t]]}}, texts, concurrency=c,
                      requests=REQUESTS, headers={})
            )  # fmt: skip
            console.print(f"mlflow models serve --workers {workers}, concurrency {c}: {out[c]:.1f} requests/s")
    finally:
        server.terminate()
        server.wait(30)
    return out


def bench_throughput(version: str, texts: list[str]) -> dict[str, object]:
    """Our endpoint and ``mlflow models serve`` with the same number of worker processes (and mlflow's
    default single worker as a second row), the same version, the same load generator."""
    from nerops.serving.client import LocalEndpoint
    from nerops.settings import get_settings

    workers = os.cpu_count() or 2
    in_process = bench_in_process(version, texts)
    console.print(f"in-process prediction, one loop: {in_process:.1f} CVs/s")
    processes = bench_processes(version, texts, workers)
    console.print(f"in-process prediction, {workers} processes: {processes:.1f} CVs/s")
    results: dict[str, dict[int, float]] = {"endpoint": {}}

    endpoint = LocalEndpoint.start(get_settings(), "bench")
    try:
        client = endpoint.client()
        client.create_deployment("blue", version, instance_count=workers)
        client.set_traffic({"blue": 100})
        for c in CONCURRENCY:
            results["endpoint"][c] = asyncio.run(
                _load(f"{endpoint.url}/score", lambda t: {"text": t}, texts, concurrency=c, requests=REQUESTS,
                      headers={"Authorization": f"Bearer {endpoint.key}"})
            )  # fmt: skip
            console.print(f"endpoint, concurrency {c}: {results['endpoint'][c]:.1f} requests/s")
    finally:
        endpoint.stop()
    results["mlflow_same_workers"] = _mlflow_rows(version, texts, workers)
    results["mlflow_one_worker"] = _mlflow_rows(version, texts, 1)
    ours, same, one = results["endpoint"], results["mlflow_same_workers"], results["mlflow_one_worker"]
    return {
        "requests_per_measurement": REQUESTS,
        "worker_processes": workers,
        "in_process_per_s": round(in_process, 2),
        "in_process_processes_per_s": round(processes, 2),
        "endpoint_per_s": {c: round(v, 2) for c, v in ours.items()},
        "mlflow_same_workers_per_s": {c: round(v, 2) for c, v in same.items()},
        "mlflow_one_worker_per_s": {c: round(v, 2) for c, v in one.items()},
        "endpoint_over_mlflow_same_workers": {c: round(ours[c] / same[c], 2) for c in CONCURRENCY},
        "endpoint_over_mlflow_one_worker": {c: round(ours[c] / one[c], 2) for c in CONCURRENCY},
        "endpoint_over_in_process_processes": {c: round(ours[c] / processes, 2) for c in CONCURRENCY},
        "load_generator_cpu_cores": {"max": round(max(LOAD_CPU), 2), "median": round(statistics.median(LOAD_CPU), 2)},
        "target_endpoint_over_mlflow_same_workers_at_8": 1.5,
    }


def bench_end_to_end(version: str, texts: list[str], rounds: int = 24, requests: int = 320) -> dict[str, object]:
    """What monitoring costs where it is paid: endpoint throughput at a saturating load (concurrency 8)
    with telemetry on against an identical endpoint with it off (NEROPS_TELEMETRY_ENABLED=false), both
    up at once and loaded in turn, the order alternating per round; the interval is a bootstrap over
    the rounds' ratios."""
    import random

    from nerops.serving.client import LocalEndpoint
    from nerops.settings import Settings, get_settings

    workers = os.cpu_count() or 2
    state = get_settings().state
    endpoints = {}
    try:
        for arm, enabled in (("on", "true"), ("off", "false")):
            os.environ["NEROPS_TELEMETRY_ENABLED"] = enabled
            ep = LocalEndpoint.start(Settings(state_dir=state), f"bench-{arm}", export_interval=5.0)
            endpoints[arm] = ep
            client = ep.client()
            client.create_deployment("blue", version, instance_count=workers)
            client.set_traffic({"blue": 100})
        os.environ.pop("NEROPS_TELEMETRY_ENABLED", None)

        def measure(arm: str) -> float:
            ep = endpoints[arm]
            return asyncio.run(
                _load(f"{ep.url}/score", lambda t: {"text": t}, texts, concurrency=8, requests=requests,
                      headers={"Authorization": f"Bearer {ep.key}"})
            )  # fmt: skip

        measure("on"), measure("off")  # warm up both
        ratios, on_rates, off_rates = [], [], []
        for i in range(rounds):
            order = ("on", "off") if i % 2 else ("off", "on")
            rates = {arm: measure(arm) for arm in order}
            on_rates.append(rates["on"])
            off_rates.append(rates["off"])
            ratios.append(rates["on"] / rates["off"])
            console.print(f"round {i + 1}/{rounds}: on {rates['on']:.1f}, off {rates['off']:.1f} requests/s")
    finally:
        os.environ.pop("NEROPS_TELEMETRY_ENABLED", None)
        for ep in endpoints.values():
            ep.stop()
    rng = random.Random(0)
    boot = sorted(statistics.median(rng.choices(ratios, k=len(ratios))) for _ in range(4000))
    low, high = boot[int(0.025 * len(boot))], boot[int(0.975 * len(boot)) - 1]
    ratio = statistics.median(ratios)
    return {
        "rounds": rounds,
        "requests_per_round": requests,
        "concurrency": 8,
        "worker_processes": workers,
        "telemetry_on_per_s": round(statistics.median(on_rates), 2),
        "telemetry_off_per_s": round(statistics.median(off_rates), 2),
        "ratio_on_over_off": round(ratio, 4),
        "ratio_ci95": [round(low, 4), round(high, 4)],
        "cost_percent": round(100 * (1 - ratio), 2),
        "cost_percent_upper_bound": round(100 * (1 - low), 2),
        "target_cost_upper_bound_percent_at_most": 1.0,
    }


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="nerops-bench-") as tmp:
        version, texts = _prepare(Path(tmp))
        telemetry = bench_telemetry(version, texts)
        end_to_end = bench_end_to_end(version, texts)
        throughput = bench_throughput(version, texts)
    report = {
        "benchmark": "serving",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "telemetry": telemetry,
        "telemetry_end_to_end": end_to_end,
        "throughput": throughput,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")

    table = Table(title="(a) scoring path, telemetry on vs off (CVs/s; ratio: median of interleaved pairs)")
    for column in ("telemetry on", "telemetry off", "on / off", "cost", "time in telemetry calls", "target"):
        table.add_column(column)
    table.add_row(
        f"{telemetry['telemetry_on_per_s']:.1f}", f"{telemetry['telemetry_off_per_s']:.1f}",
        f"{telemetry['ratio_on_over_off']:.4f}", f"{telemetry['cost_percent']:.2f} %",
        f"{telemetry['direct_cost_percent']:.2f} % ({telemetry['telemetry_us_per_request']:.0f} us/request)",
        "<= 1 %",
    )  # fmt: skip
    console.print(table)
    e2e = end_to_end
    table = Table(
        title="(a') the endpoint at concurrency 8, telemetry on vs off (requests/s; median of interleaved rounds)"
    )
    for column in ("telemetry on", "telemetry off", "on / off (95 % CI)", "cost", "cost, upper bound", "target"):
        table.add_column(column)
    low, high = e2e["ratio_ci95"]
    table.add_row(
        f"{e2e['telemetry_on_per_s']:.1f}", f"{e2e['telemetry_off_per_s']:.1f}",
        f"{e2e['ratio_on_over_off']:.3f} ({low:.3f}-{high:.3f})", f"{e2e['cost_percent']:.1f} %",
        f"{e2e['cost_percent_upper_bound']:.1f} %", "upper bound <= 1 %",
    )  # fmt: skip
    console.print(table)
    table = Table(title=f"(b) throughput (requests/s; one CV per request; {os.cpu_count()} cores)")
    workers = throughput["worker_processes"]
    for column in (
        "concurrency",
        f"nerops endpoint ({workers} workers)",
        f"mlflow serve --workers {workers}",
        "mlflow serve (1 worker)",
        "endpoint / mlflow same workers",
        "endpoint / mlflow 1 worker",
        f"endpoint / {workers} in-process",
    ):
        table.add_column(column)
    for c in CONCURRENCY:
        table.add_row(
            str(c), f"{throughput['endpoint_per_s'][c]:.1f}", f"{throughput['mlflow_same_workers_per_s'][c]:.1f}",
            f"{throughput['mlflow_one_worker_per_s'][c]:.1f}",
            f"{throughput['endpoint_over_mlflow_same_workers'][c]:.2f}",
            f"{throughput['endpoint_over_mlflow_one_worker'][c]:.2f}",
            f"{throughput['endpoint_over_in_process_processes'][c]:.2f}",
        )  # fmt: skip
    console.print(table)
    console.print(
        f"in-process: one loop {throughput['in_process_per_s']:.1f} CVs/s, {workers} processes "
        f"{throughput['in_process_processes_per_s']:.1f} CVs/s; load generator CPU: "
        f"{throughput['load_generator_cpu_cores']['median']:.2f} cores (median), "
        f"{throughput['load_generator_cpu_cores']['max']:.2f} (max)"
    )
    console.print(f"written: {RESULTS}")
