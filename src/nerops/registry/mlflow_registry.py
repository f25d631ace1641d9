"""``MlflowRegistry``: the registry port on MLflow's tracking server and model registry.

Each training run is an MLflow run (params, metrics) whose model, a pyfunc logged as code with
the model folder as an artifact, becomes a new version of one registered model. Stages are
model-version tags (MLflow stages are deprecated), champion/challenger are aliases, and the
ledger's head is anchored in a tag of the registered model.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import yaml

from nerops.errors import RegistryError, TransientBackendError
from nerops.registry import VersionInfo

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

ANCHOR_TAG = "ledger.head"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")


class MlflowRegistry:
    """Registered versions of ``model_name`` in the MLflow registry at ``tracking_uri``."""

    def __init__(self, tracking_uri: str, model_name: str, *, artifact_root: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.model_name = model_name
        self.artifact_root = artifact_root
        # models:/ URIs are resolved through the process-wide URIs: point them here too
        mlflow.set_tracking_uri(tracking_uri)
        mlflow.set_registry_uri(tracking_uri)
        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        self._experiment_id: str | None = None
        self._ensure_model()

    def _ensure_model(self) -> None:
        try:
            self.client.get_registered_model(self.model_name)
        except MlflowException as exc:
            if "RESOURCE_DOES_NOT_EXIST" not in str(exc.error_code):
                raise TransientBackendError(f"MLflow registry at {self.tracking_uri}: {exc.message}") from exc
            self.client.create_registered_model(self.model_name, description="Resume entity extraction (nerops)")

    def _experiment(self) -> str:
        if self._experiment_id is None:
            experiment = self.client.get_experiment_by_name(self.model_name)
            if experiment is None:
                location = f"{self.artifact_root.rstrip('/')}/{self.model_name}" if self.artifact_root else None
                self._experiment_id = self.client.create_experiment(self.model_name, artifact_location=location)
            else:
                self._experiment_id = experiment.experiment_id
        return self._experiment_id

    def log_version(
        self,
        model_dir: Path,
        *,
        params: dict[str, object],
        metrics: dict[str, float],
        tags: dict[str, str],
        input_example: str,
    ) -> VersionInfo:
        """One MLflow run holding the model, registered as a new version carrying ``tags``."""
        import pandas as pd

        with mlflow.start_run(experiment_id=self._experiment()) as run:
            mlflow.log_params({key: str(value)[:500] for key, value in params.items()})
            mlflow.log_metrics(metrics)
            mlflow.set_tags(tags)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(PYFUNC_CODE),
                artifacts={"model_dir": str(model_dir)},
                input_example=pd.DataFrame({"text": [input_example]}),
                pip_requirements=_requirements(),
            )
        version = self.client.create_model_version(
            self.model_name, info.model_uri, run_id=run.info.run_id, tags={**tags, "run_id": run.info.run_id}
        )
        return self.get_version(version.version)

    def get_version(self, version: str) -> VersionInfo:
        if not str(version).isdigit():
            raise RegistryError(f"{version!r} is not a version number of {self.model_name}")
        try:
            mv = self.client.get_model_version(self.model_name, str(version))
        except MlflowException as exc:
            raise RegistryError(f"{self.model_name} has no version {version}") from exc
        return VersionInfo(
            name=self.model_name,
            version=str(mv.version),
            run_id=mv.run_id,
            tags=dict(mv.tags),
            aliases=tuple(sorted(mv.aliases)),
            created_ms=int(mv.creation_timestamp or 0),
        )

    def list_versions(self) -> list[VersionInfo]:
        found = self.client.search_model_versions(f"name = '{self.model_name}'")
        return sorted((self.get_version(mv.version) for mv in found), key=lambda v: int(v.version))

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.model_name, str(version), key, str(value))

    def set_alias(self, alias: str, version: str) -> None:
        self.client.set_registered_model_alias(self.model_name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        if self.alias_version(alias) is not None:
            self.client.delete_registered_model_alias(self.model_name, alias)

    def alias_version(self, alias: str) -> str | None:
        try:
            return str(self.client.get_model_version_by_alias(self.model_name, alias).version)
        except MlflowException:
            return None

    def download(self, version: str, dst: Path) -> Path:
        """Copy a version's model folder (the logged artifact) under ``dst``; return its path."""
        dst = Path(dst)
        with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
            local = Path(
                mlflow.artifacts.download_artifacts(
                    artifact_uri=f"models:/{self.model_name}/{version}",
                    dst_path=tmp,
                    tracking_uri=self.tracking_uri,
                )
            )
            mlmodel = yaml.safe_load((local / "MLmodel").read_text())
            relative = mlmodel["flavors"]["python_function"]["artifacts"]["model_dir"]["path"]
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(local / relative, dst)
        return dst

    def read_anchor(self) -> str | None:
        return self.client.get_registered_model(self.model_name).tags.get(ANCHOR_TAG)

    def write_anchor(self, value: str) -> None:
        self.client.set_registered_model_tag(self.model_name, ANCHOR_TAG, value)


def _requirements() -> list[str]:
    from nerops.model.pipeline import library_versions

    versions = library_versions()
    return [
        f"{package}=={versions[package]}" for package in ("spacy", "python-crfsuite", "mlflow") if package in versions
    ]
