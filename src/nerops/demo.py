"""The lifecycle demo on the local platform (``make demo``)."""

from __future__ import annotations

from pathlib import Path

from nerops.reporting import console, print_versions
from nerops.settings import Settings


def run_demo(settings: Settings) -> None:
    """Train and promote a first model through retrain-model, then show the gate reject a weak one."""
    from flows.retrain_model import retrain_model
    from nerops.lifecycle import open_governance
    from nerops.params import RetrainRequest

    console.rule("[bold]1. retrain-model: the quick config on all training CVs")
    good = retrain_model(RetrainRequest(config="quick", reason="demo: first model"))
    console.rule("[bold]2. retrain-model: a deliberately weak model (a tenth of the training CVs)")
    weak = retrain_model(RetrainRequest(config="quick", train_fraction=0.1, reason="demo: weak model"))

    gov = open_governance(settings)
    console.rule("[bold]Summary")
    print_versions(gov)
    for label, run in (("quick model", good), ("weak model", weak)):
        verdict = "promoted" if run["promoted"] else ("passed" if run["passed"] else "rejected")
        console.print(f"[bold]{label}[/] v{run['version']} {verdict}:")
        for reason in run["reasons"]:
            console.print(f"  - {reason}")
    report = gov.verify()
    console.print(f"ledger: {report.describe().splitlines()[0]}")
    dashboard = serve_and_watch(settings, gov)
    console.print("where to look:")
    console.print("  Prefect UI (runs, gate reports):  make ui            then open http://127.0.0.1:4200")
    console.print("  MLflow UI (runs, versions, tags): make mlflow-ui     then open http://127.0.0.1:5000")
    console.print(f"  audit ledger:                     .venv/bin/nerops ledger history   ({settings.ledger_path})")
    console.print("  lineage of the champion:          .venv/bin/nerops lineage champion")
    console.print(f"  dashboard:                        {dashboard}")
    console.print("  endpoint again (foreground):      make endpoint      then .venv/bin/nerops traffic")
    console.print(f"  state folder:                     {settings.state}")


def serve_and_watch(settings: Settings, gov) -> Path:
    """Serve the champion on the local endpoint, send real traffic, show the alert rules, write the dashboard."""
    import os
    import time

    from nerops.dataset import resolve_zips
    from nerops.registry import CHAMPION
    from nerops.reporting import write_monitoring_dashboard
    from nerops.serving.client import LocalEndpoint
    from nerops.serving.traffic import load_texts, run_traffic
    from nerops.telemetry import TelemetryStore
    from nerops.telemetry.alerts import evaluate, format_results, load_rules, standalone
    from nerops.telemetry.source import judgeable_now

    champion = gov.registry.alias_version(CHAMPION)
    console.rule(f"[bold]3. the local online endpoint serves the champion v{champion}")
    endpoint = LocalEndpoint.start(settings, "resume-ner", export_interval=1.0)
    try:
        client = endpoint.client()
        name = f"ner-v{champion}"
        state = client.endpoint()
        if name not in state["deployments"]:
            client.create_deployment(name, champion, instance_count=os.cpu_count() or 2)
        client.set_traffic({name: 100}, mirror={})
        for other in state["deployments"]:
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
    finally:
        endpoint.stop()
    console.rule("[bold]4. alert rules on the telemetry just recorded")
    with TelemetryStore(settings.state / "telemetry" / "telemetry.db") as store:
        now = judgeable_now(store, None, time.time())  # the last moment every writer has exported
        console.print(format_results(evaluate(standalone(load_rules()), store, now=now)), markup=False)
    console.print("(no_data where a rule needs more samples or an hour of baseline than this demo has)")
    console.rule("[bold]5. dashboard")
    path = write_monitoring_dashboard(settings, hours=1.0)
    console.print(f"written: {path}")
    return path
