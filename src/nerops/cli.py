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

from nerops.errors import NeropsError
from nerops.settings import get_settings


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
    """The lifecycle demo on the local platform: train the quick model and score it."""
    from nerops.reporting import train_and_report

    train_and_report(get_settings(), "quick", demo=True)


if __name__ == "__main__":
    main()
