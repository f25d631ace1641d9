"""Flow parameters: what one run does. Frozen pydantic models, so Prefect validates them and renders a form."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from nerops.gate import GatePolicy


class GateParams(BaseModel):
    """The gate's thresholds (defaults: ``GatePolicy``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    min_micro_f1: float = Field(GatePolicy.min_micro_f1, ge=0, le=1)
    default_min_label_f1: float = Field(GatePolicy.default_min_label_f1, ge=0, le=1)
    noninferiority_margin: float = Field(GatePolicy.noninferiority_margin, ge=0, le=1)
    max_latency_ratio: float = Field(GatePolicy.max_latency_ratio, gt=0)
    bootstrap_samples: int = Field(GatePolicy.bootstrap_samples, ge=100, le=100_000)

    def policy(self) -> GatePolicy:
        return GatePolicy(**self.model_dump())


class RetrainRequest(BaseModel):
    """What one ``retrain-model`` run trains, and whether a pass is approved (stage=prod, challenger)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    config: Literal["tiny", "quick", "full"] | None = Field(
        None, description="The training config; default: the profile's (production full, demo quick, test tiny)."
    )
    commit: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{40}$",
        description="Train the code at this git commit (checked out beside the project); default: the code here.",
    )
    seed: int | None = Field(None, description="Override the config's seed.")
    train_fraction: float | None = Field(None, gt=0, le=1, description="Train on this share of the training CVs.")
    approve_on_pass: bool = Field(True, description="Approve a pass: stage=prod and alias challenger.")
    reason: str = Field("retrain", min_length=1, max_length=500, description="Why this run happens (recorded).")
    gate: GateParams = GateParams()

    def overrides(self) -> dict[str, object]:
        values = {"seed": self.seed, "train_fraction": self.train_fraction}
        return {key: value for key, value in values.items() if value is not None}


class GateRequest(BaseModel):
    """Which version ``gate-model`` gates, and whether a pass is approved."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str | None = Field(
        None,
        pattern=r"^(v?\d+|challenger|champion)$",
        description="A version number or alias; default: the newest candidate without a gate entry.",
    )
    approve_on_pass: bool = Field(False, description="Approve a pass: stage=prod and alias challenger.")
    reason: str = Field("manual gate", min_length=1, max_length=500)
    gate: GateParams = GateParams()


class RolloutRequest(BaseModel):
    """Which version ``progressive-rollout`` rolls out, to which endpoint (durations come from the profile)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(
        "challenger", pattern=r"^(v?\d+|challenger)$", description="A version number, or the challenger (default)."
    )
    endpoint: str | None = Field(None, description="The endpoint; default: the model's production endpoint.")
    new_attempt: bool = Field(False, description="Roll out again a version whose last rollout ended.")
    approval: bool = Field(
        False,
        description="Wait for an approval (nerops rollout approve, or this run's input) before the profile's "
        "approval step; the judge runs meanwhile, and the profile's timeout takes its default action.",
    )
    reason: str = Field("rollout", min_length=1, max_length=500, description="Why this rollout (recorded).")


class RollbackRequest(BaseModel):
    """``rollback-model``: bring a rollout's endpoint back to its stable state, or production to an earlier version."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    rollout: str | None = Field(None, description="A rollout id (ENDPOINT/vVERSION/ATTEMPT): back to its stable state.")
    to: str | None = Field(None, pattern=r"^(previous|v?\d+)$", description="'previous' (champion) or a version.")
    endpoint: str | None = Field(None, description="The endpoint (with 'to'); default: the production endpoint.")
    reason: str = Field("rollback", min_length=1, max_length=500, description="Why (recorded).")


class GithubPush(BaseModel):
    """What the webhook receiver's ``nerops.github.retrain-requested`` event says about an accepted push."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    delivery: str = Field(..., min_length=1, max_length=100, description="GitHub's X-GitHub-Delivery id.")
    repository: str = Field(..., min_length=1, max_length=200, description="owner/name")
    ref: str = Field(..., min_length=1, max_length=300)
    commit: str = Field(..., pattern=r"^[0-9a-f]{40}$", description="The pushed head commit (the push's 'after').")
    before: str | None = None
    pusher: str | None = Field(None, max_length=200)
    matched: list[str] = Field(default_factory=list, description="Changed files matching the training paths.")
    files_complete: bool = Field(True, description="False: the payload's file lists may be capped.")
    reason: str = Field("", max_length=1000, description="The receiver's reason for wanting a retrain.")
