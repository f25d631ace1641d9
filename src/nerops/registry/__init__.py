"""The model registry port: registered versions with tags and aliases, and where the ledger is anchored.

Vocabulary: tag ``stage`` is ``candidate`` (registered, not yet passed), ``prod`` (passed the
gate against the champion of that moment) or ``archived`` (rolled back or retired, with a
reason); alias ``champion`` is the version the production endpoint's stable deployment serves,
``challenger`` the version approved and next to be rolled out. The registry is chosen by the
tracking URI's scheme; ``MlflowRegistry`` is the implementation for every scheme MLflow's
tracking client supports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from nerops.errors import ConfigurationError
from nerops.registry.lineage import lineage_from_tags
from nerops.settings import Settings

STAGE_TAG = "stage"
STAGES = ("candidate", "prod", "archived")
CHAMPION = "champion"
CHALLENGER = "challenger"
MLFLOW_SCHEMES = ("sqlite", "file", "http", "https", "postgresql", "mysql", "databricks")


@dataclass(frozen=True)
class VersionInfo:
    """One registered model version as the registry sees it now."""

    name: str
    version: str
    run_id: str | None
    tags: dict[str, str] = field(default_factory=dict)
    aliases: tuple[str, ...] = ()
    created_ms: int = 0

    @property
    def stage(self) -> str | None:
        return self.tags.get(STAGE_TAG)

    @property
    def lineage(self) -> dict[str, str]:
        return lineage_from_tags(self.tags)


class ModelRegistry(Protocol):
    """What the governance code needs from a registry."""

    model_name: str

    def log_version(
        self,
        model_dir: Path,
        *,
        params: dict[str, object],
        metrics: dict[str, float],
        tags: dict[str, str],
        input_example: str,
    ) -> VersionInfo: ...

    def get_version(self, version: str) -> VersionInfo: ...

    def list_versions(self) -> list[VersionInfo]: ...

    def set_tags(self, version: str, tags: dict[str, str]) -> None: ...

    def set_alias(self, alias: str, version: str) -> None: ...

    def delete_alias(self, alias: str) -> None: ...

    def alias_version(self, alias: str) -> str | None:
        """None only when the alias does not exist; a backend failure raises (fail closed)."""
        ...

    def find_by_artifacts(self, sha256: str) -> VersionInfo | None: ...

    def download(self, version: str, dst: Path) -> Path: ...

    def read_anchor(self) -> str | None: ...

    def write_anchor(self, value: str) -> None: ...


def get_registry(settings: Settings) -> ModelRegistry:
    """The registry for the configured tracking URI (MLflow on SQLite in the state folder by default)."""
    uri = settings.tracking_uri
    scheme = uri.split(":", 1)[0] if ":" in uri else "file"
    if scheme in MLFLOW_SCHEMES:
        from nerops.registry.mlflow_registry import MlflowRegistry

        return MlflowRegistry(uri, settings.registered_model, artifact_root=settings.artifact_root)
    raise ConfigurationError(
        f"NEROPS_MLFLOW_TRACKING_URI {uri!r}: unsupported scheme {scheme!r}; use one of {', '.join(MLFLOW_SCHEMES)}"
    )
