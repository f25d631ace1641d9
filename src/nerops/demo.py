"""The lifecycle demo on the local platform (``make demo``)."""

from __future__ import annotations

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
    console.print("where to look:")
    console.print("  Prefect UI (runs, gate reports):  make ui            then open http://127.0.0.1:4200")
    console.print("  MLflow UI (runs, versions, tags): make mlflow-ui     then open http://127.0.0.1:5000")
    console.print(f"  audit ledger:                     .venv/bin/nerops ledger history   ({settings.ledger_path})")
    console.print("  lineage of the champion:          .venv/bin/nerops lineage champion")
    console.print(f"  state folder:                     {settings.state}")
