"""``health-sweep``: on a schedule, the alert rules for every live deployment (what starts or stops firing goes
into the ledger), a rollout whose owner's lease expired taken over and finished with the same judge, and
the dashboard refreshed. While a rollout has a live owner the sweep only tells it: the rollout's own
anytime-valid judge decides, so the sweep adds no repeated-look false alarms.
"""

from __future__ import annotations

from prefect import flow
from prefect.artifacts import create_markdown_artifact

from nerops.settings import get_settings
from tasks.rollout import refresh_dashboard, sweep_endpoint


def sweep_markdown(report: dict, dashboard: str) -> str:
    lines = [
        f"# Health sweep of {report['endpoint']}",
        "",
        f"Firing: {', '.join(report['firing']) or 'nothing'}"
        + (f" (ledger entry {report['recorded']})" if report["recorded"] else " (unchanged)"),
        "",
        f"Rollout: {report['rollout'] or 'none running'}"
        + (f": {report['rollout_action']}, now {report['rollout_phase']}" if report["rollout"] else "")
        + (f"; {report['released']}" if report.get("released") else ""),
        "",
        f"Dashboard: `{dashboard}`",
        "",
        "| rule | deployment | label | state | evidence |",
        "|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['rule']} | {row['deployment']} | {row['label']} | {row['state']} | "
            f"{row['message'].replace('|', '/')[:300]} |"
        )
    return "\n".join(lines)


@flow(name="health-sweep", log_prints=True)
def health_sweep(endpoint: str | None = None) -> dict:
    """Sweep the endpoint's health: alert rules, an abandoned rollout, the dashboard."""
    name = endpoint or get_settings().endpoint_of()
    report = sweep_endpoint(name)
    dashboard = refresh_dashboard(name)
    create_markdown_artifact(
        sweep_markdown(report, dashboard), key=f"health-sweep-{name.lower()}", description=f"health sweep of {name}"
    )
    print(
        f"{name}: firing {report['firing'] or 'nothing'}; rollout {report['rollout'] or 'none'} "
        f"{report['rollout_action']}"
    )
    return report


if __name__ == "__main__":
    health_sweep()
