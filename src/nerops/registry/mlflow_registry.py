"""``MlflowRegistry``: the registry port on MLflow's tracking server and model registry.

Each training run is an MLflow run (params, metrics) whose model, a pyfunc logged as code with
the model folder as an artifact, becomes a new version of one registered model. Stages are
model-version tags (MLflow stages are deprecated), champion/challenger are aliases, and the
ledger's head is anchored in a tag of the registered model.

Errors fail closed: only MLflow's ``RESOURCE_DOES_NOT_EXIST`` means "there is none" (no such
version, model or alias); a refused request is a ``RegistryError``; anything else (connection
refused, a timeout, a 5xx) is a ``TransientBackendError``, which tasks retry. MLflow's own HTTP
retry loop (7 retries, about 4 minutes) is cut to 2 unless set, so that the tasks' retries and the
ledger's lagging registry anchor decide instead of a four-minute wait.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml

from nerops.errors import RegistryError, TransientBackendError
from nerops.registry import VersionInfo

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

import mlflow  # noqa: E402
from mlflow import MlflowClient  # noqa: E402
from mlflow.exceptions import MlflowException  # noqa: E402

ANCHOR_TAG = "ledger.head"
PYFUNC_CODE = Path(__file__).with_name("pyfunc_model.py")
NOT_FOUND = "RESOURCE_DOES_NOT_EXIST"
REFUSED = frozenset({"INVALID_PARAMETER_VALUE", "BAD_REQUEST", "RESOURCE_ALREADY_EXISTS", "PERMISSION_DENIED"})
T = TypeVar("T")


def is_not_found(exc: BaseException) -> bool:
    return isinstance(exc, MlflowException) and str(exc.error_code) == NOT_FOUND


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
        self._model_exists = False  # created on the first write: reads work (and answer "none") before

    def _call(self, what: str, fn: Callable[..., T], *args: object) -> T:
        """Call the MLflow client, its errors turned into ours (callers that accept "none" check first)."""
        try:
            return fn(*args)
        except MlflowException as exc:
            raise self._error(what, exc) from exc
        except (OSError, ConnectionError, TimeoutError) as exc:
            raise TransientBackendError(f"MLflow registry at {self.tracking_uri}: {what} failed: {exc}") from exc

    def _error(self, what: str, exc: MlflowException) -> Exception:
        where = f"MLflow registry at {self.tracking_uri}: {what}"
        if str(exc.error_code) in REFUSED or is_not_found(exc):
            return RegistryError(f"{where} was refused: {exc.message}")
        return TransientBackendError(f"{where} failed ({exc.error_code}): {exc.message}")

    def _registered_model(self):
        """The registered model, or None only when MLflow says it does not exist."""
        try:
            return self._call("read the registered model", self.client.get_registered_model, self.model_name)
        except RegistryError as exc:
            if is_not_found(exc.__cause__):
                return None
            raise

    def _ensure_model(self) -> None:
        if not self._model_exists and self._registered_model() is None:
            self._call(
                "create the registered model",
                self.client.create_registered_model,
                self.model_name,
                {},
                "Resume entity extraction (nerops)",
            )
        self._model_exists = True

    def _experiment(self) -> str:
        if self._experiment_id is None:
            experiment = self._call("read the experiment", self.client.get_experiment_by_name, self.model_name)
            if experiment is None:
                location = f"{self.artifact_root.rstrip('/')}/{self.model_name}" if self.artifact_root else None
                self._experiment_id = self._call(
                    "create the experiment", self.client.create_experiment, self.model_name, location
                )
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

        self._ensure_model()

        def log() -> str:
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
            return self.client.create_model_version(
                self.model_name,
                info.model_uri,
                run_id=run.info.run_id,
                tags={**tags, "run_id": run.info.run_id},
                model_id=info.model_id,  # a tracking server refuses a models:/m-... source without it
            ).version

        return self.get_version(self._call("log and register the model", log))

    def get_version(self, version: str) -> VersionInfo:
        if not str(version).isdigit():
            raise RegistryError(f"{version!r} is not a version number of {self.model_name}")
        try:
            mv = self._call(f"read version {version}", self.client.get_model_version, self.model_name, str(version))
        except RegistryError as exc:
            if is_not_found(exc.__cause__):
                raise RegistryError(f"{self.model_name} has no version {version}") from exc
            raise
        return _info(self.model_name, mv)

    def find_by_artifacts(self, sha256: str) -> VersionInfo | None:
        """The oldest version whose recorded artifact hash is ``sha256`` (a retried registration), or None."""
        query = f"name = '{self.model_name}' and tags.`lineage.artifact_sha256` = '{sha256}'"
        found = self._call("search versions", self.client.search_model_versions, query)
        versions = sorted(found, key=lambda mv: int(mv.version))
        return _info(self.model_name, versions[0]) if versions else None

    def list_versions(self) -> list[VersionInfo]:
        found = self._call("list versions", self.client.search_model_versions, f"name = '{self.model_name}'")
        model = self._registered_model()
        by_version: dict[str, list[str]] = {}
        for alias, version in (model.aliases or {}).items() if model is not None else ():
            by_version.setdefault(str(version), []).append(alias)
        infos = (_info(self.model_name, mv, aliases=by_version.get(str(mv.version), ())) for mv in found)
        return sorted(infos, key=lambda v: int(v.version))

    def set_tags(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            tag = self.client.set_model_version_tag
            self._call(f"tag version {version}", tag, self.model_name, str(version), key, str(value))

    def set_alias(self, alias: str, version: str) -> None:
        self._ensure_model()
        self._call(f"set alias {alias}", self.client.set_registered_model_alias, self.model_name, alias, str(version))

    def delete_alias(self, alias: str) -> None:
        if self.alias_version(alias) is not None:
            self._call(f"delete alias {alias}", self.client.delete_registered_model_alias, self.model_name, alias)

    def alias_version(self, alias: str) -> str | None:
        """The version an alias points at; None only when the alias or the model does not exist."""
        model = self._registered_model()
        version = (model.aliases or {}).get(alias) if model is not None else None
        return None if version is None else str(version)

    def download(self, version: str, dst: Path) -> Path:
        """Copy a version's model folder (the logged artifact) under ``dst``; return its path."""
        dst = Path(dst)
        with tempfile.TemporaryDirectory(dir=dst.parent if dst.parent.exists() else None) as tmp:
            uri = f"models:/{self.model_name}/{version}"
            local = Path(self._call(f"download version {version}", self._fetch, uri, tmp))
            mlmodel = yaml.safe_load((local / "MLmodel").read_text())
            relative = mlmodel["flavors"]["python_function"]["artifacts"]["model_dir"]["path"]
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(local / relative, dst)
        return dst

    def _fetch(self, uri: str, dst: str) -> str:
        return mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=dst, tracking_uri=self.tracking_uri)

    def read_anchor(self) -> str | None:
        model = self._registered_model()
        return None if model is None else model.tags.get(ANCHOR_TAG)

    def write_anchor(self, value: str) -> None:
        self._ensure_model()
        self._call("write the ledger anchor", self.client.set_registered_model_tag, self.model_name, ANCHOR_TAG, value)


def _info(name: str, mv, *, aliases=None) -> VersionInfo:
    return VersionInfo(
        name=name,
        version=str(mv.version),
        run_id=mv.run_id,
        tags=dict(mv.tags),
        aliases=tuple(sorted(mv.aliases or () if aliases is None else aliases)),
        created_ms=int(mv.creation_timestamp or 0),
    )


def _requirements() -> list[str]:
    from nerops.model.pipeline import library_versions

    versions = library_versions()
    return [
        f"{package}=={versions[package]}" for package in ("spacy", "python-crfsuite", "mlflow") if package in versions
    ]
