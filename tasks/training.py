"""Tasks that train and score models."""

from __future__ import annotations

from prefect import task
from prefect.cache_policies import NO_CACHE

from nerops import lifecycle
from tasks.common import actor


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate(config: str | None, overrides: dict[str, object], commit: str | None = None) -> dict[str, object]:
    """Train a model on the training split and record the training in the ledger (config None: the profile's);
    with ``commit``, the code at that commit, checked out beside the project (refused if it cannot be)."""
    if commit:
        return lifecycle.train_commit(commit, config, overrides, actor=actor())
    return lifecycle.train_candidate(config, overrides, actor=actor())


@task(name="evaluate-on-test-set", cache_policy=NO_CACHE)
def evaluate_candidate(model_dir: str) -> dict[str, object]:
    """Score a model folder on the fixed test set."""
    return lifecycle.evaluate_candidate(model_dir)
