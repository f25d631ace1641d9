"""Tasks that publish what a person reads in the Prefect UI."""

from __future__ import annotations

from prefect import task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from nerops.gate_report import gate_label_table, gate_markdown


@task(name="publish-gate-report", cache_policy=NO_CACHE)
def publish_gate_report(gate: dict[str, object]) -> None:
    """A markdown summary of challenger against champion and a per-label table, as artifacts."""
    version = gate["challenger"]["version"]
    create_markdown_artifact(gate_markdown(gate), key=f"gate-v{version}", description=f"Gate decision for v{version}")
    create_table_artifact(
        gate_label_table(gate), key=f"gate-v{version}-labels", description=f"Per-label F1 for v{version}"
    )
