"""The lifecycle demo on the local platform (``make demo``).

Part 1: a first model approved and made champion by an initial deployment, a weak one rejected by the gate,
the champion serving real traffic. Part 2: a second good model rolled out step by step under live traffic
and promoted by the ``progressive-rollout`` flow (profile ``demo``: seconds, not minutes), then a bad
candidate the gate passes (a fault model) rolled back by the judge by itself; the evidence, the ledger,
``nerops status``, the rollout history and reports, and the dashboard marking both.
"""

from __future__ import annotations

import os
from pathlib import Path

from nerops.reporting import console, print_versions
from nerops.settings import Settings


def run_demo(settings: Settings) -> None:
    """Approve a first model, make it champion by an initial deployment, show the gate reject a weak one, serve;
    roll a second model out and promote it, roll a bad one out and see it rolled back."""
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
        rollouts = roll_out(settings, gov, endpoint)
    finally:
        endpoint.stop()
    dashboard = alerts_and_dashboard(settings)
    show_history(settings, gov, rollouts)
    report = gov.verify(catch_up=True)
    console.print(f"ledger: {report.describe().splitlines()[0]}")
    console.print("where to look:")
    console.print("  what is live, and any disagreement: .venv/bin/nerops status")
    console.print("  every rollout; one after the fact:  .venv/bin/nerops rollout list; nerops rollout report ID")
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

    console.rule("[bold]8. alert rules on the telemetry just recorded")
    with TelemetryStore(settings.state / "telemetry" / "telemetry.db") as store:
        now = judgeable_now(store, None, time.time())  # the last moment every writer has exported
        console.print(format_results(evaluate(standalone(load_rules()), store, now=now)), markup=False)
    console.print("(no_data where a rule needs more samples or an hour of baseline than this demo has)")
    console.rule("[bold]9. dashboard")
    path = write_monitoring_dashboard(settings, hours=1.0)
    console.print(f"written: {path}")
    return path


DEMO_RATE = 8.0  # live requests a second during the rollouts


def roll_out(settings: Settings, gov, endpoint) -> list[str]:
    """5. a second good model; 6. its progressive rollout under live traffic; 7. a bad candidate rolled back."""
    from flows.progressive_rollout import progressive_rollout
    from flows.retrain_model import retrain_model
    from nerops.dataset import resolve_zips
    from nerops.lifecycle import approve_version, fault_model, gate_version
    from nerops.params import RetrainRequest, RolloutRequest
    from nerops.serving.traffic import SteadyTraffic, load_texts

    if os.environ.get("NEROPS_ROLLOUT_PROFILE") not in ("demo", "test"):
        os.environ["NEROPS_ROLLOUT_PROFILE"] = "demo"  # seconds per step; production takes hours
        console.print("rollouts in this demo use the rollout profile [bold]demo[/] (rollouts/policy.yaml)")
    console.rule("[bold]5. retrain-model: a second good model (the quick config, another seed)")
    second = retrain_model(RetrainRequest(config="quick", seed=7, reason="demo: a second model"))
    for reason in second["reasons"]:
        console.print(f"  - {reason}")
    if not second["approved"]:
        console.print(f"[red]v{second['version']} was not approved; the rollouts are skipped[/]")
        return []
    texts = load_texts(resolve_zips(settings)[1])
    rollouts = []
    with SteadyTraffic(endpoint.url, endpoint.key, texts, rate=DEMO_RATE) as traffic:
        console.rule(f"[bold]6. progressive-rollout of v{second['version']} under live traffic ({DEMO_RATE:g}/s)")
        console.print(_plan_line())
        state = progressive_rollout(RolloutRequest(version=str(second["version"])), return_state=True)
        rollouts.append(_ended(state, gov, traffic))
        champion = gov.state().champion
        console.rule(f"[bold]7. a bad candidate: v{champion} finding 1 entity in 5, which the gate cannot see")
        made = fault_model(champion, "fewer-entities", reason="demo: a bad candidate", actor=gov.actor)
        bad = str(made["version"])
        gated = gate_version(bad, actor=gov.actor)
        console.print(f"gate of v{bad} against the champion v{champion}: {'passed' if gated['passed'] else 'failed'}"
                      " (the fault acts only in a serving worker: offline, it is its source model)")  # fmt: skip
        if gated["passed"]:
            approve_version(bad, "demo: a bad candidate the gate passed", actor=gov.actor)
            state = progressive_rollout(RolloutRequest(version=bad), return_state=True)
            rollouts.append(_ended(state, gov, traffic))
    return [r for r in rollouts if r]


def _plan_line() -> str:
    from nerops.controller.factory import controller

    plan = controller(None, "demo", metrics=False).plan
    return f"plan ({plan.profile} profile, a look every {plan.interval:g} s): " + " -> ".join(
        step.label for step in plan.steps
    )


def _ended(state, gov, traffic) -> str:
    """Say how a rollout run ended, with the look that decided it; the rollout id ('' if none began)."""
    from nerops.controller import evidence
    from nerops.controller.factory import record_store

    store = record_store()
    records = [r for name in store.endpoints() for r in store.all(name)]
    if not records:
        console.print(f"[red]{state.name}: {state.message}[/]")
        return ""
    record = max(records, key=lambda r: r.created)
    colour = "green" if state.is_completed() else "red"
    console.print(f"[{colour}]{state.name}[/]: {state.message}", markup=True, highlight=False)
    answered = traffic.answered_by(record.candidate)
    console.print(f"the candidate {record.candidate} answered {answered} live requests of this demo's traffic")
    lines = evidence.read(store.evidence_path(record))
    decided = next((line for line in lines if line["phase"] in ("rolled_back", "aborted")), None)
    if decided is not None:
        look = decided.get("look", {})
        console.print(f"the look that decided (evidence line {lines.index(decided) + 1} of {len(lines)}): "
                      f"{look.get('status')}: {look.get('reason', '')[:300]}", highlight=False)  # fmt: skip
        for m in look.get("metrics", []):
            if m["status"] == "unhealthy":
                console.print(
                    f"  {m['metric']} ({', '.join(m['traffic'])}): candidate {m['candidate']:.3g} against "
                    f"stable {m['stable']:.3g}, {m['candidate_samples']} / {m['stable_samples']} samples "
                    f"(min {m['min_samples']}), e-value {m['e_value']:.3g} past its threshold {m['threshold']:.3g}",
                    highlight=False,
                )
    return record.rollout_id


def show_history(settings: Settings, gov, rollouts: list[str]) -> None:
    """10. the rollout history, a report of each rollout, the ledger's last entries, nerops status."""
    from nerops.controller import evidence
    from nerops.controller.factory import record_store
    from nerops.controller.history import list_table, summarize, write_report
    from nerops.ledger import describe_entry
    from nerops.status import collect, read_endpoint

    if not rollouts:
        return
    console.rule("[bold]10. rollout history, reports, ledger, status")
    store, entries = record_store(settings), gov.ledger.entries()
    records = [r for name in store.endpoints() for r in store.all(name)]
    rows = [
        summarize(r, evidence.read(store.evidence_path(r)), entries) for r in sorted(records, key=lambda r: r.created)
    ]
    console.print("$ nerops rollout list", highlight=False)
    console.print(list_table(rows), markup=False, highlight=False)
    for rid in rollouts:
        record = next(r for r in records if r.rollout_id == rid)
        paths = [write_report(store, record, settings, fmt) for fmt in ("md", "html")]
        console.print(f"report of {rid}: {paths[0]} ({paths[1].name} beside it)", highlight=False)
    console.print("$ nerops ledger history (the last 12 entries)", highlight=False)
    for entry in entries[-12:]:
        console.print(f"  {describe_entry(entry)[:160]}", markup=False, highlight=False)
    console.print("$ nerops status", highlight=False)
    name = settings.endpoint_of()
    console.print(collect(gov, name, read_endpoint(settings.state, name)).describe(), markup=False, highlight=False)
