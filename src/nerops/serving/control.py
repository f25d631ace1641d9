"""The endpoint's control plane: keys, saved state, deployments' pools, and the control API.

Rules as Azure ML applies them: a deployment serves one registry version, and only a version
tagged ``stage=prod`` whose artifacts still match their lineage; traffic and mirror are set as
a whole object (read-modify-write; ``If-Match`` with the state's ETag refuses a lost update);
a deployment with traffic cannot be deleted, nor given another model or environment, but it can
be scaled: a PUT that changes only ``instance_count`` adds or removes workers in place while the
others serve (a long-running operation, like a creation). The state is saved atomically after
every change, so a restart comes back with the same deployments and traffic, and every change is
a ledger entry.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import tempfile
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from nerops.actors import acted_by
from nerops.errors import LineageError, NeropsError, RegistryError
from nerops.governance import Governance
from nerops.serving.copies import LocalCopies
from nerops.serving.credentials import ControlKeys
from nerops.serving.pool import RESERVED_VARIABLES, DeploymentPool, PoolSettings, PoolStartError
from nerops.serving.state import (
    DeploymentSpec,
    EndpointRuleError,
    EndpointState,
    with_deployment,
    with_traffic,
    without_deployment,
)

log = logging.getLogger("nerops.endpoint")

MAX_INSTANCES = 16
MAX_CONTROL_BODY = 64 * 1024
CHANGE_HEADERS = {"x-nerops-actor": "actor", "x-nerops-reason": "reason", "x-nerops-correlation-id": "correlation_id"}
MAX_VARIABLES = 50
_VARIABLE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")


class ControlError(NeropsError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class EndpointKeys:
    """A primary and a secondary key, kept in a 0600 file; compared in constant time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(
                path, json.dumps({"primary": secrets.token_urlsafe(32), "secondary": secrets.token_urlsafe(32)})
            )
            os.chmod(path, 0o600)
        data = json.loads(path.read_text())
        self.primary, self.secondary = data["primary"], data["secondary"]

    def check(self, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token:
            return False
        given = token.strip().encode()
        ok_primary = hmac.compare_digest(given, self.primary.encode())
        ok_secondary = hmac.compare_digest(given, self.secondary.encode())
        return ok_primary or ok_secondary


@dataclass(frozen=True)
class Who:
    """Who asks for a control change: actor, reason, correlation id (the headers) and the credential used."""

    change: dict[str, str]
    credential: str | None


class EndpointBusyError(NeropsError):
    """Another process already serves this endpoint."""


def hold_serve_lock(folder: Path):
    """Take the endpoint's serve lock (one serving process per endpoint name); the open file holds it."""
    folder.mkdir(parents=True, exist_ok=True)
    handle = (folder / "serve.lock").open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise EndpointBusyError(f"endpoint {folder.name!r} is already served by process {holder}") from None
    handle.seek(0)
    handle.truncate()
    handle.write(str(os.getpid()))
    handle.flush()
    return handle


class EndpointController:
    def __init__(
        self,
        folder: Path,
        state: EndpointState,
        governance: Governance,
        pool_settings: PoolSettings | None = None,
        control_keys: ControlKeys | None = None,
    ) -> None:
        self.folder = folder
        self.state = state
        self.gov = governance
        self.pool_settings = pool_settings or PoolSettings()
        self.keys = EndpointKeys(folder / "keys.json")
        self.copies = LocalCopies(folder / "models", governance)
        self.control_keys = control_keys
        self.pools: dict[str, DeploymentPool] = {}
        self.down: dict[str, str] = {}  # deployments that could not start, with why
        self.socket_dir = Path(tempfile.mkdtemp(prefix="nerops-sock-"))
        self._lock = asyncio.Lock()
        self.operations: dict[str, dict] = {}  # deployment name -> its last create/replace/scale operation
        self._provisioning: dict[str, asyncio.Task] = {}

    @classmethod
    def open(
        cls,
        folder: Path,
        name: str,
        governance: Governance,
        pool_settings: PoolSettings | None = None,
        control_keys: ControlKeys | None = None,
    ) -> EndpointController:
        path = folder / "endpoint.json"
        state = EndpointState.from_dict(json.loads(path.read_text())) if path.exists() else EndpointState(name)
        folder.mkdir(parents=True, exist_ok=True)
        return cls(folder, state, governance, pool_settings, control_keys)

    async def start(self) -> None:
        """Bring back every saved deployment (lineage checked again) with its traffic.

        A deployment that cannot start (its lineage no longer checks out, say) stays down, with the
        reason kept for its requests' 503 answers; the others serve.
        """
        for spec in self.state.deployments.values():
            try:
                self.pools[spec.name] = await self._start_pool(spec)
            except (ControlError, PoolStartError) as exc:
                self.down[spec.name] = str(exc)
                log.error("deployment %s stays down: %s", spec.name, exc)

    async def stop(self) -> None:
        for task in list(self._provisioning.values()):
            task.cancel()
        for task in list(self._provisioning.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await asyncio.gather(*(pool.stop() for pool in self.pools.values()))
        shutil.rmtree(self.socket_dir, ignore_errors=True)

    # --- the control API ----------------------------------------------------------------------

    async def handle(
        self, method: str, path: str, body: bytes, headers, *, credential: str | None = None
    ) -> tuple[int, dict, dict[str, str]]:
        """One control request; ``credential`` is the control credential it came with (for its fingerprint)."""
        parts = [p for p in path.split("/") if p]
        if len(body) > MAX_CONTROL_BODY:
            raise ControlError(413, "payload_too_large", f"control bodies are at most {MAX_CONTROL_BODY} bytes")
        async with self._lock:
            who = Who(_change_headers(headers), credential)
            if parts == ["endpoint"] and method == "GET":
                return 200, self.describe(), {"ETag": self.state.etag()}
            if parts == ["endpoint"] and method == "PUT":
                return await self._put_endpoint(_json(body), headers.get("if-match"), who)
            if parts == ["deployments"] and method == "GET":
                return 200, {"deployments": [p.status() for p in self.pools.values()]}, {}
            if len(parts) == 2 and parts[0] == "deployments":
                name = parts[1]
                if method == "GET":
                    return 200, self.deployment_status(name), {}
                if method == "PUT":
                    return await self._put_deployment(name, _json(body), headers.get("if-match"), who)
                if method == "DELETE":
                    return await self._delete_deployment(name, who)
        raise ControlError(404, "not_found", f"no control route {method} /control/{path}")

    def deployment_status(self, name: str) -> dict[str, object]:
        """A deployment's workers and ``provisioning_state`` (Creating, Updating, Succeeded, Failed), as on Azure ML."""
        operation = self.operations.get(name)
        pool = self.pools.get(name)
        if pool is None and operation is None:
            raise ControlError(404, "not_found", f"no deployment named {name!r}")
        out: dict[str, object] = dict(pool.status()) if pool else {"name": name}
        if operation and (operation["provisioning_state"] in ("Creating", "Updating") or pool is None):
            out.update(operation)
        elif operation and operation["provisioning_state"] == "Failed":
            # the last update failed while the workers it left serve on: Failed, as on Azure ML, until
            # an operation succeeds; ``workers`` say what serves
            out.update(provisioning_state="Failed", error=operation["error"], last_operation=operation)
        else:
            out["provisioning_state"] = "Failed" if pool and pool.down_reason else "Succeeded"
        return out

    def describe(self) -> dict[str, object]:
        return {
            **self.state.to_dict(),
            "etag": self.state.etag(),
            "status": {name: pool.status() for name, pool in self.pools.items()},
            "down": dict(self.down),
            "operations": {name: dict(op) for name, op in self.operations.items()},
        }

    async def _put_endpoint(self, data: dict, if_match: str | None, who: Who) -> tuple[int, dict, dict[str, str]]:
        if if_match and if_match.strip('"') != self.state.etag():
            raise ControlError(412, "precondition_failed", "the endpoint changed since you read it: read it again")
        unknown = set(data) - {"traffic", "mirror"}
        if unknown:
            raise ControlError(400, "invalid_change", f"unknown fields {sorted(unknown)}: send 'traffic' and 'mirror'")
        before = self.state
        try:
            after = with_traffic(before, data.get("traffic", before.traffic), data.get("mirror", before.mirror))
        except EndpointRuleError as exc:
            raise ControlError(400, "invalid_change", str(exc)) from exc
        if after != before:
            await self._commit(
                after,
                "traffic_change",
                {"endpoint": after.name},
                {
                    "before": {"traffic": before.traffic, "mirror": before.mirror},
                    "after": {"traffic": after.traffic, "mirror": after.mirror},
                },
                who,
            )
        return 200, self.describe(), {"ETag": self.state.etag()}

    async def _put_deployment(
        self, name: str, data: dict, if_match: str | None, who: Who
    ) -> tuple[int, dict, dict[str, str]]:
        if if_match and if_match.strip('"') != self.state.etag():
            raise ControlError(412, "precondition_failed", "the endpoint changed since you read it: read it again")
        unknown = set(data) - {"model", "instance_count", "environment_variables"}
        if unknown:
            raise ControlError(400, "invalid_change", f"unknown fields {sorted(unknown)}")
        version = _version_of(str(data.get("model", "")), self.gov.model)
        spec = DeploymentSpec(
            name,
            f"models:/{self.gov.model}/{version}",
            version,
            _instance_count(data.get("instance_count", 1)),
            _variables(data.get("environment_variables", {})),
        )
        try:
            with_deployment(self.state, spec)  # the rules, checked now; applied when the workers are up
        except EndpointRuleError as exc:
            raise ControlError(400, "invalid_change", str(exc)) from exc
        existing = self.state.deployments.get(name)
        running = self.pools.get(name)
        serving = running is not None and running.down_reason is None and name not in self.down
        if existing == spec and serving and name not in self._provisioning:
            if self.operations.get(name, {}).get("provisioning_state") == "Failed":
                del self.operations[name]  # it is as asked: a failed update before this one is over
            return 200, running.status(), {}
        # only instance_count differs: a scale, in place while it serves (a down one is started again)
        scale = existing is not None and replace(existing, instance_count=spec.instance_count) == spec
        # a deployment that takes traffic keeps its model and environment; the same spec again restarts a down one
        if existing and not scale and (self.state.traffic.get(name) or self.state.mirror.get(name)):
            raise ControlError(409, "has_traffic", f"deployment {name!r} takes traffic: deploy to a new name instead")
        if scale and serving:
            return await self._begin_scale(existing, spec.instance_count, who)
        stage = (await asyncio.to_thread(self.gov.state)).stage(version)  # from the ledger: no registry needed
        if stage is None:
            raise ControlError(409, "not_found", f"{self.gov.model} has no version {version} in the ledger")
        if stage != "prod":
            raise ControlError(
                409, "not_prod", f"v{version} is tagged stage={stage}: only stage=prod versions may take traffic"
            )
        if name in self._provisioning:
            raise ControlError(409, "operation_in_progress", f"deployment {name!r} is being created or replaced")
        operation = {
            "name": name,
            "model_version": version,
            "provisioning_state": "Updating" if existing else "Creating",
            "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "error": None,
        }
        self.operations[name] = operation
        task = asyncio.create_task(
            self._provision(spec, existing is not None, operation, who), name=f"provision-{name}"
        )
        self._provisioning[name] = task
        task.add_done_callback(lambda _: self._provisioning.pop(name, None))
        return 202, dict(operation), {"Location": f"/control/deployments/{name}"}

    async def _begin_scale(self, spec: DeploymentSpec, count: int, who: Who) -> tuple[int, dict, dict[str, str]]:
        name = spec.name
        if name in self._provisioning:
            raise ControlError(409, "operation_in_progress", f"deployment {name!r} is being changed: wait, then scale")
        if count > spec.instance_count:  # new workers load the version: it must still be one that may serve
            stage = (await asyncio.to_thread(self.gov.state)).stage(spec.model_version)
            if stage != "prod":
                why = f"v{spec.model_version} is tagged stage={stage}: it serves on, but no new worker may start it"
                raise ControlError(409, "not_prod", why)
        operation = {
            "name": name,
            "model_version": spec.model_version,
            "provisioning_state": "Updating",
            "started": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "error": None,
            "scale": {"from": spec.instance_count, "to": count},
        }
        self.operations[name] = operation
        task = asyncio.create_task(self._scale(spec, count, operation, who), name=f"scale-{name}")
        self._provisioning[name] = task
        task.add_done_callback(lambda _: self._provisioning.pop(name, None))
        return 202, dict(operation), {"Location": f"/control/deployments/{name}"}

    async def _scale(self, spec: DeploymentSpec, count: int, operation: dict, who: Who) -> None:
        """Add or remove workers outside the control lock (the others serve, traffic changes go on), then commit.

        New workers start from the local copy checked again as at creation; a scale-up that fails stops
        the workers it added and leaves the old ones serving; the saved state keeps the old count.
        """
        name, pool = spec.name, self.pools[spec.name]
        subject = {
            "model": self.gov.model,
            "version": spec.model_version,
            "endpoint": self.state.name,
            "deployment": name,
        }
        try:
            if count > spec.instance_count:
                try:
                    model_dir = await asyncio.to_thread(self.copies.get, spec.model_version)
                except (LineageError, RegistryError) as exc:
                    raise ControlError(409, "lineage", f"deployment {name!r}: {exc}") from exc
                pool.model_dir = model_dir
            await pool.scale(count)
        except (ControlError, PoolStartError, OSError) as exc:  # the pool serves on as it was
            status, code = (exc.status, exc.code) if isinstance(exc, ControlError) else (503, "deployment_failed")
            async with self._lock:
                evidence = {
                    "model": spec.model,
                    "instance_count": count,
                    "scale": {"from": spec.instance_count, "to": count},
                    "error": str(exc),
                }
                await self._append("deployment_failed", subject, evidence, who)
                operation.update(
                    provisioning_state="Failed", error={"status": status, "code": code, "message": str(exc)}
                )
                self._provisioning.pop(name, None)
            return
        async with self._lock:
            current = self.state.deployments[name]  # no delete or replacement while the operation runs
            after = with_deployment(self.state, replace(current, instance_count=count))
            evidence = {"model": spec.model, "from": spec.instance_count, "to": count}
            await self._commit(after, "deployment_scaled", subject, evidence, who)
            operation.update(provisioning_state="Succeeded")
            self._provisioning.pop(name, None)

    async def _provision(self, spec: DeploymentSpec, replaced: bool, operation: dict, who: Who) -> None:
        """Start the deployment's workers outside the control lock (traffic changes go on meanwhile), then commit."""
        name, version = spec.name, spec.model_version
        subject = {"model": self.gov.model, "version": version, "endpoint": self.state.name, "deployment": name}
        try:
            pool = await self._start_pool(spec)  # checks lineage before any process starts
        except (ControlError, PoolStartError) as exc:  # nothing of it is left running; an old pool still serves
            status, code = (exc.status, exc.code) if isinstance(exc, ControlError) else (503, "deployment_failed")
            async with self._lock:
                running = self.pools.get(name)
                if running is None or running.down_reason:
                    self.down[name] = str(exc)
                evidence = {"model": spec.model, "instance_count": spec.instance_count, "error": str(exc)}
                await self._append("deployment_failed", subject, evidence, who)
                operation.update(
                    provisioning_state="Failed", error={"status": status, "code": code, "message": str(exc)}
                )
                self._provisioning.pop(name, None)
            return
        async with self._lock:
            try:
                after = with_deployment(self.state, spec)  # the state of now: traffic may have moved meanwhile
            except EndpointRuleError as exc:
                await pool.stop()
                operation.update(
                    provisioning_state="Failed", error={"status": 409, "code": "conflict", "message": str(exc)}
                )
                self._provisioning.pop(name, None)
                return
            old = self.pools.pop(name, None)
            self.pools[name] = pool  # the new workers serve before the old ones stop: no gap
            self.down.pop(name, None)
            evidence = {"model": spec.model, "instance_count": spec.instance_count, "replaced": replaced}
            if spec.environment_variables:
                evidence["environment_variables"] = sorted(spec.environment_variables)  # names only: may be secret
            await self._commit(after, "deployment_created", subject, evidence, who)
            operation.update(provisioning_state="Succeeded")
            self._provisioning.pop(name, None)  # done as reported: a DELETE may follow at once
        if old:
            await old.stop()
        serving = {spec.model_version for spec in self.state.deployments.values()}
        # and the versions of deployments still being created: their copies are in use by workers starting now
        serving |= {self.operations[other]["model_version"] for other in self._provisioning if other in self.operations}
        await asyncio.to_thread(self.copies.prune, serving)

    async def _delete_deployment(self, name: str, who: Who) -> tuple[int, dict, dict[str, str]]:
        if name in self._provisioning:
            raise ControlError(409, "operation_in_progress", f"deployment {name!r} is being created: wait, then delete")
        self.operations.pop(name, None)
        if name not in self.state.deployments and name in self.down:  # a first start that failed
            del self.down[name]
            return 200, {"deleted": name}, {}
        try:
            after = without_deployment(self.state, name)
        except EndpointRuleError as exc:
            raise ControlError(409, "has_traffic" if name in self.state.deployments else "not_found", str(exc)) from exc
        spec = self.state.deployments[name]
        subject = {
            "model": self.gov.model,
            "version": spec.model_version,
            "endpoint": self.state.name,
            "deployment": name,
        }
        await self._commit(after, "deployment_deleted", subject, {"model": spec.model}, who)
        pool = self.pools.pop(name, None)
        self.down.pop(name, None)
        if pool:
            await pool.stop()
        return 200, {"deleted": name}, {}

    # --- helpers ----------------------------------------------------------------------------------

    async def _start_pool(self, spec: DeploymentSpec) -> DeploymentPool:
        try:  # a verified local copy, or a fresh download when the registry answers
            model_dir = await asyncio.to_thread(self.copies.get, spec.model_version)
        except (LineageError, RegistryError) as exc:
            raise ControlError(409, "lineage", f"deployment {spec.name!r}: {exc}") from exc
        pool = DeploymentPool(
            spec.name,
            spec.model_version,
            model_dir,
            spec.instance_count,
            self.socket_dir,
            settings=self.pool_settings,
            environment=dict(spec.environment_variables),
            log_dir=self.folder / "logs",
        )
        await pool.start()
        return pool

    async def _commit(self, after: EndpointState, kind: str, subject: dict, evidence: dict, who: Who) -> None:
        """Ledger entry first (the commit point), then the saved state.

        The entry names who asked (the caller's actor, else the endpoint), why and for which rollout
        (its correlation id), and the fingerprint of the control credential used.
        """
        await self._append(kind, subject, evidence, who)
        _atomic_write(self.folder / "endpoint.json", json.dumps(after.to_dict(), indent=2))
        self.state = after

    async def _append(self, kind: str, subject: dict, evidence: dict, who: Who) -> None:
        evidence = {**evidence, **who.change, "acted_by": acted_by(credential=who.credential)}
        actor = who.change.get("actor") or self.gov.actor
        await asyncio.to_thread(self.gov.ledger.append, kind, subject=subject, evidence=evidence, actor=actor)


def _version_of(model: str, registered: str) -> str:
    """A version number from ``models:/<name>/<n>``, ``azureml:<name>:<n>`` or ``<n>``; never a path."""
    for prefix in (f"models:/{registered}/", f"azureml:{registered}:"):
        if model.startswith(prefix):
            model = model[len(prefix) :]
            break
    if not model.lstrip("v").isdigit():
        raise ControlError(
            400, "invalid_model", f"model must name a registry version (models:/{registered}/<n>), not {model!r}"
        )
    return model.lstrip("v")


def _change_headers(headers) -> dict[str, str]:
    """Who asks, why, and for which rollout: printable text, at most 200 characters each."""
    out = {}
    for header, key in CHANGE_HEADERS.items():
        value = (headers.get(header) or "").strip()
        if value:
            if len(value) > 200 or not value.isprintable():
                raise ControlError(400, "invalid_header", f"{header}: printable text of at most 200 characters")
            out[key] = value
    return out


def _instance_count(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_INSTANCES:
        raise ControlError(400, "invalid_change", f"instance_count must be an integer from 1 to {MAX_INSTANCES}")
    return value


def _variables(value: object) -> dict[str, str]:
    """A deployment's environment variables: names and string values, none of the worker's own."""
    if not isinstance(value, dict) or len(value) > MAX_VARIABLES:
        raise ControlError(400, "invalid_change", f"environment_variables: an object of at most {MAX_VARIABLES}")
    for name, item in value.items():
        if not _VARIABLE_NAME.fullmatch(name) or name in RESERVED_VARIABLES:
            raise ControlError(400, "invalid_change", f"environment_variables: {name[:40]!r} is not a usable name")
        if not isinstance(item, str) or len(item) > 4096:
            raise ControlError(400, "invalid_change", f"environment_variables: {name!r} needs a string value")
    return dict(sorted(value.items()))


def _json(body: bytes) -> dict:
    try:
        data = json.loads(body or b"{}")
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ControlError(400, "invalid_json", "the body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ControlError(400, "invalid_json", "the body must be a JSON object")
    return data


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
