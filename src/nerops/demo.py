"""The lifecycle demo on the local platform (``make demo``)."""

from __future__ import annotations

from pathlib import Path

from nerops.reporting import console, print_versions
from nerops.settings import Settings


def run_demo(settings: Settings) -> None:
    """Approve a first model, make it champion by an initial deployment, show the gate reject a weak one, serve."""
    from flows.retrain_model import retrain_model
    from nerops.lifecycle import open_governance
    from nerops.params import RetrainRequest
    from nerops.serving.client import LocalEndpoint

    console.rule("[bold]1. retrain-model: the quick config on all training CVs")
    good = retrain_model(RetrainRequest(config="quick", reason="demo: first model"))
    gov = open_governance(settings)
    endpoint = LocalEndpoint.start(settings, settings.endpoint_of(), export_interval=1.0)
    try:
        initial_deployment(settings, gov, endpoint, good["version"])
        console.rule("[bold]3. retrain-model: a deliberately weak model (a tenth of the training CVs)")
        weak = retrain_model(RetrainRequest(config="quick", train_fraction=0.1, reason="demo: weak model"))
        console.rule("[bold]Summary")
        print_versions(gov)
        for label, run in (("quick model", good), ("weak model", weak)):
            verdict = "approved" if run["approved"] else ("passed" if run["passed"] else "rejected")
            console.print(f"[bold]{label}[/] v{run['version']} {verdict}:")
            for reason in run["reasons"]:
                console.print(f"  - {reason}")
        send_traffic(settings, gov, endpoint)
    finally:
        endpoint.stop()
    dashboard = alerts_and_dashboard(settings)
    report = gov.verify(catch_up=True)
    console.print(f"ledger: {report.describe().splitlines()[0]}")
    console.print("where to look:")
    console.print("  what is live, and any disagreement: .venv/bin/nerops status")
    console.print("  Prefect UI (runs, gate reports):  make ui            then open http://127.0.0.1:4200")
    console.print("  MLflow UI (runs, versions, tags): make mlflow-ui     then open http://127.0.0.1:5000")
    console.print(f"  audit ledger:                     .venv/bin/nerops ledger history   ({settings.ledger_path})")
    console.print("  what was live at a moment:        .venv/bin/nerops ledger live-at 2026-12-01T12:00:00Z")
    console.print("  lineage of the champion:          .venv/bin/nerops lineage champion")
    console.print(f"  dashboard:                        {dashboard}")
    console.print("  endpoint again (foreground):      make endpoint      then .venv/bin/nerops traffic")
    console.print(f"  state folder:                     {settings.state}")


def initial_deployment(settings: Settings, gov, endpoint, version: str) -> None:
    """The first model becomes champion by an initial deployment: readiness, probes, absolute thresholds."""
    import os

    from nerops.first_deployment import deploy_first

    client = endpoint.client()
    champion = gov.state().champion
    name = f"ner-v{champion or version}"
    console.rule(f"[bold]2. initial deployment: {name} on the local online endpoint")
    if champion is None:
        entry = deploy_first(gov, client, version, name, endpoint=endpoint.name, instances=os.cpu_count() or 2)
        probes = entry.evidence["probes"]
        console.print(
            f"v{version} is champion (ledger entry {entry.seq}): ready, {len(probes)} probes answered, "
            f"gate entry {entry.evidence['thresholds']['gate_seq']} passed the absolute thresholds"
        )
    else:  # a state folder reused from an earlier demo: the champion stays, the endpoint serves it
        console.print(f"v{champion} is already champion (an earlier run); v{version} stays the approved challenger")
        if name not in client.endpoint()["deployments"]:
            client.create_deployment(name, champion, instance_count=os.cpu_count() or 2)
        client.set_traffic({name: 100}, mirror={})


def send_traffic(settings: Settings, gov, endpoint) -> None:
    """Send real traffic to the champion's deployment, and two malformed requests."""
    from nerops.dataset import resolve_zips
    from nerops.serving.traffic import load_texts, run_traffic

    champion = gov.state().champion
    client = endpoint.client()
    name = f"ner-v{champion}"
    console.rule(f"[bold]4. the local online endpoint serves the champion v{champion}")
    for other in client.endpoint()["deployments"]:
        if other != name:
            client.delete_deployment(other)
    console.print(f"endpoint {endpoint.url}: deployment {name} (v{champion}) takes 100 % of traffic")
    console.print("replaying the test CVs for 30 s at 20 requests/s ...")
    report = run_traffic(endpoint.url, endpoint.key, load_texts(resolve_zips(settings)[1]), requests=600,
                         concurrency=4, rate=20)  # fmt: skip
    console.print(report.summary())
    for bad in ('{"txt": "no text field"}', "not json"):
        client.http.post("/score", content=bad, headers={"content-type": "application/json"})
    console.print("sent 2 malformed requests: answered 4xx, counted as client errors")


def alerts_and_dashboard(settings: Settings) -> Path:
    """The alert rules on the telemetry the stopped endpoint flushed, and the dashboard page."""
    import time

    from nerops.reporting import write_monitoring_dashboard
    from nerops.telemetry import TelemetryStore
    from nerops.telemetry.alerts import evaluate, format_results, load_rules, standalone
    from nerops.telemetry.source import judgeable_now

    console.rule("[bold]5. alert rules on the telemetry just recorded")
    with TelemetryStore(settings.state / "telemetry" / "telemetry.db") as store:
        now = judgeable_now(store, None, time.time())  # the last moment every writer has exported
        console.print(format_results(evaluate(standalone(load_rules()), store, now=now)), markup=False)
    console.print("(no_data where a rule needs more samples or an hour of baseline than this demo has)")
    console.rule("[bold]6. dashboard")
    path = write_monitoring_dashboard(settings, hours=1.0)
    console.print(f"written: {path}")
    return path
