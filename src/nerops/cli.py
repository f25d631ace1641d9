"""The ``nerops`` command line: data, train, evaluate, predict, demo.

Machine-readable answers (evaluate, predict) go to stdout as JSON; progress and tables go to
stderr, so ``nerops evaluate ... | jq`` works. Errors are one line naming the file or setting.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from nerops.errors import ConfigurationError, NeropsError
from nerops.settings import configure_prefect, get_settings


class NeropsGroup(click.Group):
    """Turns the package's own errors into one readable line and exit code 2."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except NeropsError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(2)


@click.group(cls=NeropsGroup)
@click.version_option(package_name="nerops")
def main() -> None:
    """Operate a resume entity-extraction model in production, safely."""


@main.command()
def data() -> None:
    """Fetch and check the dataset; print its version and what the loader repaired (JSON)."""
    from nerops.dataset import load_dataset

    click.echo(json.dumps(load_dataset(get_settings()).summary(), indent=2))


@main.command()
@click.option("--config", "config_name", type=click.Choice(["quick", "full"]), default="quick", show_default=True)
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option(
    "--out", type=click.Path(path_type=Path), default=None, help="Model folder (default: in the state folder)."
)
def train(config_name: str, seed: int | None, out: Path | None) -> None:
    """Train a model on the training zip and score it on the fixed test set."""
    from nerops.reporting import train_and_report

    overrides = {} if seed is None else {"seed": seed}
    train_and_report(get_settings(), config_name, out=out, overrides=overrides)


@main.command()
@click.option("--model", "model_ref", required=True, help="A model folder (registry versions and aliases: soon).")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path),
    default=None,
    help="A zip or folder of dotin XML CVs (default: the fixed test set).",
)
@click.option("--bootstrap", type=int, default=1000, show_default=True, help="Bootstrap resamples for the CI.")
def evaluate(model_ref: str, data_path: Path | None, bootstrap: int) -> None:
    """Score a model on labelled CVs; print entity-level P/R/F1 as JSON."""
    from nerops.reporting import evaluate_model, resolve_model

    model_dir = resolve_model(model_ref)
    if data_path is None:
        from nerops.dataset import resolve_zips

        data_path = resolve_zips(get_settings())[1]
    result = evaluate_model(model_dir, data_path, bootstrap_samples=bootstrap)
    click.echo(json.dumps(result, indent=2))


@main.command()
@click.option("--model", "model_ref", required=True, help="A model folder.")
def predict(model_ref: str) -> None:
    """Read one text on stdin; print its entities as JSON."""
    from nerops.model.pipeline import Extractor
    from nerops.reporting import resolve_model

    extractor = Extractor.load(resolve_model(model_ref))
    started = time.perf_counter()
    entities = extractor.predict(sys.stdin.read())
    click.echo(json.dumps({"entities": entities, "seconds": round(time.perf_counter() - started, 3)}))


@main.command()
def demo() -> None:
    """The lifecycle demo on the local platform: retrain-model twice (a good model, then a weak one)."""
    configure_prefect(get_settings())
    from nerops.demo import run_demo

    run_demo(get_settings())


@main.command()
@click.option("--config", "config_name", type=click.Choice(["quick", "full"]), default="quick", show_default=True)
@click.option("--seed", type=int, default=None, help="Override the config's seed.")
@click.option("--train-fraction", type=click.FloatRange(0, 1, min_open=True), default=None)
@click.option("--no-approve", is_flag=True, help="Gate, but do not approve on a pass.")
@click.option("--reason", default="manual retrain", show_default=True, help="Recorded in the ledger.")
def retrain(config_name: str, seed: int | None, train_fraction: float | None, no_approve: bool, reason: str) -> None:
    """Run the retrain-model flow: train, evaluate, register, gate, approve on pass."""
    configure_prefect(get_settings())
    from flows.retrain_model import retrain_model
    from nerops.params import RetrainRequest

    request = RetrainRequest(
        config=config_name, seed=seed, train_fraction=train_fraction, approve_on_pass=not no_approve, reason=reason
    )
    click.echo(json.dumps(retrain_model(request), indent=2))


@main.command()
@click.argument("version")
@click.option("--approve", "approve_on_pass", is_flag=True, help="Approve on a pass (stage=prod, challenger).")
@click.option("--reason", default="manual gate", show_default=True)
def gate(version: str, approve_on_pass: bool, reason: str) -> None:
    """Gate VERSION (number or alias) against the champion on the fixed test set."""
    from nerops.lifecycle import approve_version, gate_version

    result = gate_version(version, actor=get_settings().who)
    click.echo(result["summary"])
    if result["passed"] and approve_on_pass:
        approved = approve_version(result["challenger"]["version"], reason, actor=get_settings().who)
        click.echo(_approved(approved))
    sys.exit(0 if result["passed"] else 1)


@main.command()
@click.argument("version")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
def approve(version: str, reason: str) -> None:
    """Approve VERSION for production traffic (stage=prod, alias challenger); needs a current gate pass."""
    from nerops.lifecycle import approve_version

    click.echo(_approved(approve_version(version, reason, actor=get_settings().who)))


@main.command("fault-model")
@click.option(
    "--from", "source", required=True, help="The version (number or alias) whose model the fault is built on."
)
@click.option(
    "--fault", "kind", required=True, type=click.Choice(["slow", "fewer-entities", "errors"]), help="What goes wrong."
)
@click.option(
    "--after", type=click.IntRange(min=0), default=None, help="Documents each serving worker answers well first [10]."
)
@click.option("--delay-ms", type=int, default=None, help="slow: milliseconds added [200].")
@click.option(
    "--share", type=float, default=None, help="slow / errors: share of inputs hit, by hash of the text [1.0 / 0.3]."
)
@click.option("--keep-every", type=int, default=None, help="fewer-entities: keep 1 entity in this many [5].")
@click.option(
    "--reason", default="fault model for a rollout demonstration", show_default=True, help="Recorded in the lineage."
)
def fault_model(
    source: str,
    kind: str,
    after: int | None,
    delay_ms: int | None,
    share: float | None,
    keep_every: int | None,
    reason: str,
) -> None:
    """Register a new version: VERSION's model with a fault in its spaCy pipeline that acts only in serving.

    The gate passes it like its source; served by the endpoint it is slow, drops entities or answers 500,
    for a rollout to roll back. It may be approved or become champion only under the rollout profile
    demo or test (NEROPS_ROLLOUT_PROFILE).
    """
    from nerops.lifecycle import fault_model as build

    given = {"after": after, "delay_ms": delay_ms, "share": share, "keep_every": keep_every}
    result = build(
        source, kind, reason=reason, actor=get_settings().who, **{k: v for k, v in given.items() if v is not None}
    )
    click.echo(f"registered v{result['version']} (candidate): {result['description']}")


def _approved(result: dict) -> str:
    champion = f"v{result['champion']}" if result["champion"] else "none"
    return (
        f"approved v{result['version']} (ledger entry {result['ledger_seq']}): stage={result['stage']}, "
        f"challenger; the champion stays {champion} until a rollout completes"
    )


@main.group()
def champion() -> None:
    """The champion: the version the production endpoint's stable deployment serves."""


@champion.command("set")
@click.argument("version")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
def champion_set(version: str, reason: str) -> None:
    """Make VERSION (stage=prod) champion by hand, audited; refused if the champion moves meanwhile."""
    from nerops.lifecycle import open_governance

    gov = open_governance()
    before = gov.state().champion
    entry = gov.set_champion(version, expected=before, reason=reason)
    click.echo(
        f"champion moved from {before or 'none'} to {entry.subject['version']} (ledger entry {entry.seq}); "
        "the endpoint's traffic is not changed by this command"
    )


@main.command()
@click.argument("version")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
def retire(version: str, reason: str) -> None:
    """Archive a stage=prod VERSION as retired (not the champion or challenger); `reinstate` undoes it."""
    from nerops.lifecycle import open_governance

    entry = open_governance().retire(version, reason=reason)
    click.echo(f"retired v{entry.subject['version']} (ledger entry {entry.seq})")


@main.command()
@click.argument("version")
@click.option("--reason", required=True, help="Why (recorded in the ledger).")
def reinstate(version: str, reason: str) -> None:
    """Return a retired VERSION to stage=prod (never a rolled-back or faulty one)."""
    from nerops.lifecycle import open_governance

    entry = open_governance().reinstate(version, reason=reason)
    click.echo(f"reinstated v{entry.subject['version']} as stage=prod (ledger entry {entry.seq})")


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def status(as_json: bool) -> None:
    """What is live: deployments and weights, champion, challenger, a running rollout, and every disagreement."""
    from nerops.lifecycle import open_governance
    from nerops.status import collect, read_endpoint

    settings = get_settings()
    name = settings.endpoint_of()
    report = collect(open_governance(settings), name, read_endpoint(settings.state, name))
    click.echo(report.to_json() if as_json else report.describe())


@main.command("audit-artifacts")
@click.option("--model", "model_ref", required=True, help="A model folder, a version number or an alias.")
@click.option(
    "--data",
    "data_path",
    type=click.Path(path_type=Path, exists=True),
    default=None,
    help="The training zip whose personal strings are looked for (default: the dataset's training zip).",
)
def audit_artifacts(model_ref: str, data_path: Path | None) -> None:
    """Scan a model's files for the training set's e-mails, phones, URLs and names; counts only (JSON).

    Exits 1 when any is found: the gate refuses such a model.
    """
    from nerops.lifecycle import audit_artifacts as audit

    result = audit(model_ref, data_path)
    click.echo(json.dumps(result, indent=2))
    click.secho(result["summary"], fg="green" if result["ok"] else "red", err=True)
    sys.exit(0 if result["ok"] else 1)


@main.command()
def models() -> None:
    """List registered versions: stage, aliases, test F1, last gate verdict."""
    from nerops.lifecycle import open_governance
    from nerops.reporting import print_versions

    print_versions(open_governance())


@main.command()
@click.argument("version")
def lineage(version: str) -> None:
    """Say how VERSION was made: data, config, code, libraries, artifacts, decisions."""
    from nerops.lifecycle import open_governance
    from nerops.reporting import describe_lineage

    click.echo(describe_lineage(open_governance(), version))


@main.group()
def ledger() -> None:
    """The audit ledger: verify the chain, read the history."""


@ledger.command("verify")
def ledger_verify() -> None:
    """Check the hash chain, its anchors, and that registry and ledger agree; exit 1 on a problem.

    A registry anchor left behind while the registry was unreachable is reported, then caught up.
    """
    from nerops.lifecycle import open_governance

    report = open_governance().verify(catch_up=True)
    click.echo(report.describe())
    sys.exit(0 if report.ok else 1)


@ledger.command("live-at")
@click.argument("when")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable.")
def ledger_live_at(when: str, as_json: bool) -> None:
    """What was live at WHEN (ISO 8601, e.g. 2026-11-26T07:15:03Z), from the ledger alone."""
    from nerops.ledger import Ledger
    from nerops.live_at import live_at

    settings = get_settings()
    answer = live_at(Ledger(settings.ledger_path).entries(), when, model=settings.registered_model)
    click.echo(json.dumps(answer.to_dict(), indent=2) if as_json else answer.describe())


@ledger.command("repair")
@click.option("--discard-partial", is_flag=True, required=True, help="Remove a last line cut off mid-write.")
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def ledger_repair(discard_partial: bool, yes: bool) -> None:
    """Repair a torn last line (a crash mid-write); committed entries are never touched."""
    from nerops.ledger import Ledger

    ledger = Ledger(get_settings().ledger_path)
    torn = ledger.partial_line()
    if torn is None:
        click.echo("nothing to repair: the last line is complete")
        return
    click.echo(f"line {torn[0]} of {ledger.path} is cut off ({torn[1]} bytes, no line end)", err=True)
    if not yes:
        click.confirm("discard it?", abort=True, err=True)
    click.echo(f"discarded {ledger.discard_partial_line()} bytes; run `nerops ledger verify`")


@ledger.command("history")
@click.option("--limit", type=int, default=50, show_default=True)
def ledger_history(limit: int) -> None:
    """The latest entries, in words."""
    from nerops.ledger import describe_entry
    from nerops.lifecycle import open_governance

    for entry in open_governance().ledger.entries()[-limit:]:
        click.echo(describe_entry(entry))


@main.command()
def reconcile() -> None:
    """Repair what an interrupted run left (orphan versions, tags behind the ledger, the anchor)."""
    from nerops.lifecycle import reconcile_registry

    actions = reconcile_registry(actor=get_settings().who)
    click.echo("\n".join(actions) if actions else "nothing to repair")


@main.group()
def endpoint() -> None:
    """The local online endpoint: serve, deploy, split traffic, inspect."""


def _endpoint_client(name: str):
    from nerops.serving.factory import endpoint_control

    return endpoint_control(get_settings(), name)


@endpoint.command("serve")
@click.option("--name", default="resume-ner", show_default=True)
@click.option("--port", type=int, default=8910, show_default=True)
def endpoint_serve(name: str, port: int) -> None:
    """Run the endpoint in the foreground on 127.0.0.1 (Ctrl-C stops it; its state is kept)."""
    from nerops.serving.endpoint import main as serve

    click.echo(f"endpoint {name} on http://127.0.0.1:{port}  (key: nerops endpoint keys)", err=True)
    serve(["--name", name, "--port", str(port)])


@endpoint.command("show")
@click.option("--name", default="resume-ner", show_default=True)
def endpoint_show(name: str) -> None:
    """Deployments, traffic, mirror and worker status (JSON)."""
    click.echo(json.dumps(_endpoint_client(name).endpoint(), indent=2))


@endpoint.command("deploy")
@click.argument("deployment")
@click.option("--model", "version", required=True, help="Registry version (number or models:/resume-ner/N).")
@click.option("--instances", type=int, default=1, show_default=True, help="Worker processes.")
@click.option("--name", default="resume-ner", show_default=True)
def endpoint_deploy(deployment: str, version: str, instances: int, name: str) -> None:
    """Create a deployment serving a stage=prod version (no traffic until you give it some)."""
    click.echo(json.dumps(_endpoint_client(name).create_deployment(deployment, version, instance_count=instances)))


@endpoint.command("traffic")
@click.argument("weights", nargs=-1, required=True)
@click.option("--mirror", "mirror", multiple=True, help="deployment=percent of live traffic to copy.")
@click.option("--name", default="resume-ner", show_default=True)
def endpoint_traffic(weights: tuple[str, ...], mirror: tuple[str, ...], name: str) -> None:
    """Set the traffic split, e.g. `blue=70 green=30` (must sum to 100)."""
    client = _endpoint_client(name)
    state = client.set_traffic(_weights(weights), _weights(mirror) if mirror else None)
    click.echo(json.dumps({"traffic": state["traffic"], "mirror": state["mirror"]}))


@endpoint.command("delete")
@click.argument("deployment")
@click.option("--name", default="resume-ner", show_default=True)
def endpoint_delete(deployment: str, name: str) -> None:
    """Delete a deployment that takes no traffic."""
    click.echo(json.dumps(_endpoint_client(name).delete_deployment(deployment)))


@endpoint.command("keys")
@click.option("--name", default="resume-ner", show_default=True)
def endpoint_keys(name: str) -> None:
    """Print the endpoint's URL and keys."""
    client = _endpoint_client(name)
    keys = json.loads((get_settings().state / "endpoints" / name / "keys.json").read_text())
    click.echo(json.dumps({"url": client.url, **keys}, indent=2))


def _weights(pairs: tuple[str, ...]) -> dict[str, int]:
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not value.strip().isdigit():
            raise ConfigurationError(f"{pair!r}: write deployment=percent, e.g. blue=70")
        out[key.strip()] = int(value)
    return out


@main.command()
@click.option("--requests", "count", type=int, default=200, show_default=True)
@click.option("--concurrency", type=int, default=4, show_default=True)
@click.option("--rate", type=float, default=None, help="Requests per second (default: as fast as answered).")
@click.option("--deployment", default=None, help="Pin every request to this deployment.")
@click.option("--data", "data_path", type=click.Path(path_type=Path), default=None, help="CVs to replay (zip/folder).")
@click.option("--name", default="resume-ner", show_default=True)
def traffic(count: int, concurrency: int, rate: float | None, deployment: str | None, data_path, name: str) -> None:
    """Replay CVs from the test zip against the endpoint; print what went where."""
    from nerops.serving.traffic import load_texts, run_traffic

    client = _endpoint_client(name)
    if data_path is None:
        from nerops.dataset import resolve_zips

        data_path = resolve_zips(get_settings())[1]
    report = run_traffic(
        client.url, client.key, load_texts(data_path), requests=count, concurrency=concurrency, rate=rate,
        deployment=deployment,
    )  # fmt: skip
    click.echo(report.summary())


@main.command()
@click.option("--rules", "rules_path", type=click.Path(path_type=Path), default=None, help="Rules file.")
@click.option("--deployment", "deployments", multiple=True, help="Only these deployments.")
@click.option("--reference", default=None, help="Also the rules against this (stable) deployment, same window.")
@click.option("--verbose", is_flag=True, help="Show each rule's query and every step.")
def alerts(rules_path: Path | None, deployments: tuple[str, ...], reference: str | None, verbose: bool) -> None:
    """Evaluate the alert rules on the telemetry store now: firing / ok / no_data / error, with evidence."""
    import time as clock

    from nerops.telemetry import TelemetryStore
    from nerops.telemetry.alerts import evaluate, format_results, load_rules, standalone
    from nerops.telemetry.source import judgeable_now

    rules = load_rules(rules_path)
    with TelemetryStore(get_settings().state / "telemetry" / "telemetry.db") as store:
        now = judgeable_now(store, None, clock.time())  # the last complete moment, not the export in flight
        chosen = rules if reference else standalone(rules)
        results = evaluate(chosen, store, now=now, deployments=list(deployments) or None, reference=reference)
    click.echo(format_results(results, verbose=verbose))


@main.command()
@click.option("--out", type=click.Path(path_type=Path), default=None, help="HTML file (default: in the state folder).")
@click.option("--hours", type=float, default=1.0, show_default=True, help="How far back to plot.")
@click.option("--name", default="resume-ner", show_default=True, help="Endpoint name (page title).")
def dashboard(out: Path | None, hours: float, name: str) -> None:
    """Write the monitoring dashboard: one self-contained HTML page of plots per deployment."""
    from nerops.reporting import write_monitoring_dashboard

    click.echo(str(write_monitoring_dashboard(get_settings(), out=out, hours=hours, endpoint=name)))


@main.group()
def rollout() -> None:
    """Progressive rollouts: the plan of a profile (the flows that run it come with progressive-rollout)."""


@rollout.command("plan")
@click.option("--profile", default=None, help="production, demo or test (default: NEROPS_ROLLOUT_PROFILE).")
@click.option("--rate", type=float, default=2.0, show_default=True, help="Live requests per second to plan for.")
@click.option("--policy", "policy_path", type=click.Path(path_type=Path), default=None, help="Policy file.")
def rollout_plan(profile: str | None, rate: float, policy_path: Path | None) -> None:
    """Validate the rollout policy and preview a profile: steps, worst-case time, when minimum samples are met."""
    from nerops.rollout.plan import build_plan, render_preview
    from nerops.rollout.policy import load_policy, policy_sha256

    settings = get_settings()
    policy, text = load_policy(policy_path or settings.rollout_policy)
    plan = build_plan(policy, profile or settings.rollout_profile, policy_sha256=policy_sha256(text))
    click.echo(render_preview(plan, rate))
    click.echo(f"policy sha256 {plan.policy_sha256}")


def _cli_controller(endpoint: str | None, metrics: bool = False):
    from nerops.controller.factory import controller

    return controller(endpoint, f"cli:{get_settings().who}", metrics=metrics)


@rollout.command("status")
@click.option("--endpoint", default=None, help="Default: the model's production endpoint.")
@click.option("--json", "as_json", is_flag=True)
def rollout_status(endpoint: str | None, as_json: bool) -> None:
    """The endpoint's running (or latest) rollout: phase, step, weight, owner and lease, last verdict, deadlines."""
    from nerops.controller.manual import find

    ctl = _cli_controller(endpoint)
    record = find(ctl, None)
    if as_json:
        click.echo(json.dumps(record.to_dict(), indent=2, sort_keys=True))
        return
    s, now = record.state, time.time()
    step = ctl.plan.steps[s["step"]] if s["step"] < len(ctl.plan.steps) else None
    lease = record.lease_until - now
    click.echo(
        f"rollout    {record.rollout_id} ({record.profile} profile): {s['phase']}"
        + (f", traffic frozen: {s['frozen']}" if s.get("frozen") else "")
    )
    click.echo(f"step       {s['step']} {step.label if step else ''} at {s['weight']} %; traffic so far {s['weights']}")
    click.echo(f"candidate  {record.candidate} (v{record.version}); stable {record.stable} (v{record.stable_version})")
    click.echo(
        f"owner      {record.owner}, lease {'ends in' if lease > 0 else 'expired'} {abs(lease):.0f} s"
        + (f" {'' if lease > 0 else 'ago'}")
    )
    if not record.ended:
        click.echo(
            f"deadline   step ends by {s['deadline'] - now:.0f} s from now; "
            f"minimum bake {max(0, s['wait_until'] - now):.0f} s"
        )
    if s.get("approval"):
        waiting = s["phase"] == "awaiting_approval" and s.get("approval_until")
        click.echo(
            "approval   "
            + (f"waiting, {s['approval_until'] - now:.0f} s left (nerops rollout approve --reason ...)" if waiting
               else "required before its step, not given yet" if s["approval"] == "required" else s["approval"])
        )  # fmt: skip
    click.echo(f"verdict    {s.get('last_verdict')}" + (f"; ended: {s['ending'][:300]}" if s.get("ending") else ""))
    click.echo(
        f"evidence   {ctl.store.evidence_path(record)} ({record.evidence_lines} looks, "
        f"sha256 {record.evidence_sha256[:16]}...)"
    )
    for queued in record.pending:
        click.echo(f"queued     {queued['verb']} by {queued['actor']}: {queued['reason']}")


def _records(endpoint: str | None = None, rollout_id: str | None = None) -> list:
    """Rollout records from the state folder only (no endpoint, registry or Prefect), oldest first."""
    from nerops.controller.factory import record_store
    from nerops.controller.records import RolloutRefused, parse_rollout_id

    store = record_store()
    known = store.endpoints()
    if rollout_id is not None:
        endpoint, version, attempt = parse_rollout_id(rollout_id)
    if endpoint is not None and endpoint not in known:
        raise RolloutRefused(f"no rollouts of endpoint {endpoint!r} in {store.root} (endpoints: {known or 'none'})")
    if rollout_id is not None:
        return [store.load(endpoint, version, attempt)]
    records = [r for name in ([endpoint] if endpoint else known) for r in store.all(name)]
    return sorted(records, key=lambda r: r.created)


@rollout.command("list")
@click.option("--endpoint", default=None, help="Default: every endpoint.")
@click.option("--json", "as_json", is_flag=True)
def rollout_list(endpoint: str | None, as_json: bool) -> None:
    """Every rollout, newest last: outcome, duration, time to decision, blast radius, live requests answered."""
    from dataclasses import asdict

    from nerops.controller import evidence
    from nerops.controller.factory import record_store
    from nerops.controller.history import list_table, summarize
    from nerops.ledger import Ledger

    settings, store = get_settings(), record_store()
    entries = Ledger(settings.ledger_path).entries() if settings.ledger_path.exists() else []
    rows = [summarize(r, evidence.read(store.evidence_path(r)), entries) for r in _records(endpoint)]
    if as_json:
        click.echo(json.dumps([{**asdict(s), "candidate_live": s.candidate_live} for s in rows], indent=2))
        return
    click.echo(list_table(rows))


@rollout.command("report")
@click.argument("rollout_id")
@click.option("--format", "fmt", type=click.Choice(["md", "html"]), default="md", show_default=True)
@click.option("--out", default=None, help="File to write, '-' for stdout (default: reports/ in the state folder).")
def rollout_report(rollout_id: str, fmt: str, out: str | None) -> None:
    """One rollout after the fact: the plan, every decision with its evidence, its ledger entries, the verify."""
    from nerops.controller.factory import record_store
    from nerops.controller.history import gather, render_html, render_markdown, write_report

    settings = get_settings()
    (record,) = _records(rollout_id=rollout_id)
    if out == "-":
        sources = gather(record_store(settings), record, settings)
        click.echo(render_markdown(sources) if fmt == "md" else render_html(sources), nl=False)
        return
    click.echo(str(write_report(record_store(settings), record, settings, fmt, Path(out) if out else None)))


def _verb(verb: str, reason: str, endpoint: str | None, rollout_id: str | None, **extra) -> None:
    from nerops.controller.manual import manual
    from nerops.rollout.actions import Command

    ctl = _cli_controller(endpoint)
    record, lines, how = manual(ctl, Command(verb, ctl.owner, reason, **extra), rollout=rollout_id)
    for line in lines:
        click.echo(line)
    click.echo(f"rollout {record.rollout_id}: {record.state['phase']} at {record.state['weight']} % ({how})")


def _verb_options(func):
    func = click.option("--rollout", "rollout_id", default=None, help="ENDPOINT/vVERSION/ATTEMPT (default: running).")(
        func
    )
    func = click.option("--endpoint", default=None, help="Default: the model's production endpoint.")(func)
    return click.option("--reason", required=True, help="Recorded in the ledger with who asked.")(func)


@rollout.command("pause")
@_verb_options
@click.option("--indefinitely", is_flag=True, help="No deadline (the reason says why).")
def rollout_pause(reason: str, endpoint: str | None, rollout_id: str | None, indefinitely: bool) -> None:
    """Freeze traffic (the judge keeps running; unhealthy still rolls back); ends at the pause deadline."""
    _verb("pause", reason, endpoint, rollout_id, indefinitely=indefinitely)


@rollout.command("resume")
@_verb_options
def rollout_resume(reason: str, endpoint: str | None, rollout_id: str | None) -> None:
    """Resume a paused rollout (its deadlines shift by the time paused)."""
    _verb("resume", reason, endpoint, rollout_id)


@rollout.command("promote")
@_verb_options
@click.option("--full", is_flag=True, help="Skip every remaining step: 100 % and champion now.")
def rollout_promote(reason: str, endpoint: str | None, rollout_id: str | None, full: bool) -> None:
    """Move to the next step now (or, with --full, finish the rollout), recorded with the reason."""
    _verb("promote", reason, endpoint, rollout_id, full=full)


@rollout.command("approve")
@_verb_options
def rollout_approve(reason: str, endpoint: str | None, rollout_id: str | None) -> None:
    """Approve a rollout waiting at its approval step (or ahead of it: it will not wait), with who and why."""
    _verb("approve", reason, endpoint, rollout_id)


@rollout.command("abort")
@_verb_options
def rollout_abort(reason: str, endpoint: str | None, rollout_id: str | None) -> None:
    """Traffic back to stable; the version stays stage=prod (a new attempt may follow)."""
    _verb("abort", reason, endpoint, rollout_id)


@rollout.command("rollback")
@_verb_options
@click.option("--to", "to", default=None, help="No running rollout: production back to 'previous' or a version.")
def rollout_rollback(reason: str, endpoint: str | None, rollout_id: str | None, to: str | None) -> None:
    """Roll the running rollout back (version archived as rolled_back), or production back to an earlier version."""
    if to:
        from nerops.controller.manual import rollback_to

        for line in rollback_to(_cli_controller(endpoint), to, reason):
            click.echo(line)
        return
    _verb("rollback", reason, endpoint, rollout_id)


def _add_groups() -> None:
    from nerops.platform.commands import platform, trigger
    from nerops.triggers.receiver import webhook

    for group in (platform, trigger, webhook):
        main.add_command(group)


_add_groups()

if __name__ == "__main__":
    main()
