"""Settings: where things live and which backends to use, from NEROPS_* environment variables.

Flow parameters say what a run does; settings say where and how.
"""

from __future__ import annotations

import getpass
import os
import socket
from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Process-wide settings, read once from the environment (prefix ``NEROPS_``)."""

    model_config = SettingsConfigDict(env_prefix="NEROPS_", frozen=True)

    state_dir: Path = Field(
        default=Path(".nerops-state"),
        description="The one folder that holds all local state (data cache, models, runs).",
    )
    data_dir: Path | None = Field(
        default=None,
        description="A local folder holding the two dotin zips; when set nothing is downloaded.",
    )
    data_base_url: str = Field(
        default=(
            "https://raw.githubusercontent.com/dotin-inc/resume-dataset-NER-annotations/"
            "052429f98489d0b9fc747d58e06db06cdeff2852"
        ),
        description="Where the zips are downloaded from (the dataset's repository, pinned commit).",
    )

    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="MLflow tracking/registry URI; default: a SQLite file in the state folder.",
    )
    registered_model: str = Field(default="resume-ner", description="The registered model's name.")
    actor: str | None = Field(default=None, description="Who acts, for the ledger (default: user@host).")
    endpoints: dict[str, str] = Field(
        default_factory=dict,
        description='The production endpoint of each registered model, e.g. {"resume-ner": "resume-ner"} '
        "(default: an endpoint named like the model). Its stable deployment serves the champion.",
    )

    control_key: SecretStr | None = Field(
        default=None, description="The control credential of the endpoint (CLI, flows); unset: a local generated one."
    )
    control_key_previous: SecretStr | None = Field(
        default=None, description="While rotating: the previous control credential, still accepted."
    )

    telemetry_enabled: bool = Field(
        default=True, description="Local endpoint: record telemetry (false only to measure what it costs)."
    )
    telemetry_export_interval_s: float = Field(
        default=5.0, gt=0, description="Local endpoint: seconds between telemetry exports into the store."
    )
    endpoint_request_timeout_s: float = Field(
        default=30.0, gt=0, description="Local endpoint: a worker that answers nothing for this long gives a 504."
    )
    endpoint_acquire_timeout_s: float = Field(
        default=5.0, gt=0, description="Local endpoint: a request that finds no free live worker this long gets a 503."
    )
    endpoint_health_interval_s: float = Field(
        default=2.0, gt=0, description="Local endpoint: seconds between worker health checks (3 failures: restart)."
    )
    endpoint_restart_backoff_s: float = Field(
        default=0.5, gt=0, description="Local endpoint: first wait before starting a failed worker again (doubles)."
    )
    endpoint_routing_seed: int | None = Field(
        default=None, description="Local endpoint: seed of the random assignment of requests (tests); unset: random."
    )
    endpoint_max_mirror_in_flight: int = Field(
        default=64, ge=1, description="Local endpoint: mirror copies in flight at most; beyond, dropped and counted."
    )
    endpoint_start_attempts: int = Field(
        default=4, ge=1, description="Local endpoint: failed starts in a row before a deployment is marked down."
    )
    auto_rollout: Literal["off", "on", "approval"] = Field(
        default="off",
        description="After a retrain approves a version: off (a person starts the rollout), on (it starts by "
        "itself), approval (it starts with its approval step on: a reviewer approves before the approval step).",
    )
    platform_crash_after_s: float = Field(
        default=90.0,
        ge=45.0,
        le=3600.0,
        description="Local platform: a flow run with no heartbeat (they come every 30 s) for this long is marked "
        "Crashed by the zombie automation; at least 45 s, so that one late heartbeat does not crash a live run.",
    )
    health_sweep_interval_s: float = Field(
        default=300.0,
        ge=60.0,
        le=86400.0,
        description="Local platform: the health-sweep deployment's schedule, set by the set-up (every 5 minutes by "
        "default: each sweep is a process importing the whole stack on the cores being judged).",
    )
    rollout_profile: Literal["production", "demo", "test"] = Field(
        default="production", description="Rollouts: the profile of rollouts/policy.yaml that sets the durations."
    )
    rollout_policy: Path | None = Field(
        default=None, description="Rollouts: the policy file (default: rollouts/policy.yaml of the project)."
    )

    # The GitHub webhook receiver (nerops.triggers.receiver): `nerops webhook serve`.
    webhook_host: str = Field(default="127.0.0.1", description="Webhook receiver: the address it listens on.")
    webhook_port: int = Field(default=8470, ge=1, le=65535, description="Webhook receiver: the port it listens on.")
    github_webhook_secret: SecretStr | None = Field(
        default=None, description="Webhook receiver: the GitHub webhook's secret (required to start)."
    )
    github_webhook_secret_previous: SecretStr | None = Field(
        default=None, description="Webhook receiver: while rotating, the previous secret, still accepted."
    )
    webhook_max_body_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1, description="Webhook receiver: larger bodies get a 413 (GitHub sends <= 25 MB)."
    )
    webhook_rate_per_s: float = Field(
        default=2.0, gt=0, description="Webhook receiver: deliveries per second accepted in the long run (all callers)."
    )
    webhook_burst: int = Field(default=20, ge=1, description="Webhook receiver: deliveries accepted at once (bucket).")
    webhook_replay_window_s: float = Field(
        default=7 * 86400.0, gt=0, description="Webhook receiver: how long delivery ids and body hashes are remembered."
    )
    webhook_event_timeout_s: float = Field(
        default=4.0, gt=0, le=9.0, description="Webhook receiver: time to post the Prefect event (GitHub waits 10 s)."
    )
    webhook_branch: str | None = Field(
        default=None, description="Webhook receiver: the branch whose pushes retrain (default: the repo's default)."
    )
    webhook_repository: str | None = Field(
        default=None, description="Webhook receiver: accept pushes of this owner/repo only (default: any)."
    )
    webhook_log_max_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, description="Webhook receiver: size of deliveries.log before it rotates."
    )
    webhook_log_backups: int = Field(default=5, ge=0, description="Webhook receiver: rotated deliveries logs kept.")

    @cached_property
    def state(self) -> Path:
        """The state folder as an absolute path, created on first use."""
        path = self.state_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def data_cache(self) -> Path:
        return self.state / "data"

    @property
    def models_dir(self) -> Path:
        return self.state / "models"

    @property
    def tracking_uri(self) -> str:
        if self.mlflow_tracking_uri:
            return self.mlflow_tracking_uri
        folder = self.state / "mlflow"
        folder.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{folder / 'mlflow.db'}"

    @property
    def artifact_root(self) -> str:
        return (self.state / "mlflow" / "artifacts").as_uri()

    @property
    def ledger_path(self) -> Path:
        return self.state / "ledger" / "ledger.jsonl"

    @property
    def ledger_anchor_path(self) -> Path:
        """The local anchor of the ledger's head (the registry keeps a second one, which may lag)."""
        return self.state / "ledger" / "head.json"

    def model_of(self, endpoint: str | None) -> str:
        """The registered model whose production endpoint ``endpoint`` is (default: the configured model)."""
        if endpoint is None or self.endpoint_of() == endpoint:
            return self.registered_model
        return next((m for m, e in self.endpoints.items() if e == endpoint), self.registered_model)

    def for_endpoint(self, endpoint: str | None) -> Settings:
        """These settings with ``registered_model`` the model ``endpoint`` serves."""
        model = self.model_of(endpoint)
        return self if model == self.registered_model else self.model_copy(update={"registered_model": model})

    def endpoint_of(self, model: str | None = None) -> str:
        """The name of the production endpoint of a registered model."""
        model = model or self.registered_model
        return self.endpoints.get(model, model)

    @property
    def who(self) -> str:
        return self.actor or f"{getpass.getuser()}@{socket.gethostname()}"


def get_settings() -> Settings:
    """Read the settings from the environment (cheap; call where needed)."""
    return Settings()


def prefect_api_url(why: str) -> str:
    """The Prefect server's API URL (``PREFECT_API_URL``); ``ConfigurationError`` saying ``why`` it is needed when
    unset (a temporary in-process server would not do: it is gone with the process)."""
    from prefect.settings import get_current_settings

    from nerops.errors import ConfigurationError

    url = get_current_settings().api.url
    if not url:
        raise ConfigurationError(f"no Prefect server: set PREFECT_API_URL {why}")
    return url


def configure_prefect(settings: Settings) -> None:
    """Keep Prefect's own state (the temporary server's database) in the state folder, unless set."""
    home = Path(os.environ.setdefault("PREFECT_HOME", str(settings.state / "prefect")))
    home.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
