"""Talk to a local endpoint (``EndpointClient``) and run one in the background (``LocalEndpoint``)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from nerops.errors import NeropsError, TransientBackendError
from nerops.serving.credentials import control_key
from nerops.serving.port import Change, EndpointView
from nerops.settings import Settings

PIN_HEADER = "azureml-model-deployment"


class EndpointError(NeropsError):
    """The endpoint refused a control request; the message is the endpoint's own."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status, self.code = status, code


class EndpointClient:
    """The local endpoint over HTTP: scoring with a scoring key, the control API with the control credential.

    It implements :class:`nerops.serving.port.EndpointControl`. Writes take a :class:`Change` (who, why,
    which rollout), recorded in the endpoint's ledger entry; ``set_traffic`` takes the caller's
    ``If-Match`` (the ETag of the state the caller's decision was based on); ``begin_scale_deployment``
    reads the deployment and sends it back with the new instance count and the ETag it read.
    """

    def __init__(self, url: str, key: str, *, control_key: str | None = None, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self.key = key
        self.control_key = control_key or key
        self.http = httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)

    def close(self) -> None:
        self.http.close()

    def score(self, text: str | None = None, *, documents: list[str] | None = None, deployment: str | None = None):
        body = {"text": text} if documents is None else {"documents": documents}
        headers = {PIN_HEADER: deployment} if deployment else {}
        return self.http.post("/score", json=body, headers=headers)

    def endpoint(self) -> dict:
        return self._control("GET", "endpoint")

    def read(self) -> EndpointView:
        """The endpoint's state with its ETag, for a later ``set_traffic(..., if_match=view.etag)``."""
        response = self._send("GET", "endpoint")
        return EndpointView(response.json(), response.headers["ETag"])

    def set_traffic(
        self,
        traffic: dict[str, int],
        mirror: dict[str, int] | None = None,
        *,
        if_match: str | None = None,
        change: Change | None = None,
    ) -> dict:
        """Set traffic (and mirror) as a whole. With ``if_match`` the write is refused (412) if the endpoint
        changed since the caller read it; without, read-modify-write here (for people at a prompt)."""
        if if_match is None or mirror is None:
            view = self.read()
            if_match = if_match or view.etag
            mirror = view.state["mirror"] if mirror is None else mirror
        headers = {"If-Match": if_match, **_change(change)}
        return self._control("PUT", "endpoint", {"traffic": traffic, "mirror": mirror}, headers=headers)

    def create_deployment(
        self,
        name: str,
        version: str,
        *,
        instance_count: int = 1,
        environment_variables: dict[str, str] | None = None,
        change: Change | None = None,
        deadline_s: float = 300.0,
    ) -> dict:
        """A deployment serving registry version ``version`` (a number, or ``models:/<model>/<n>``), started:
        :meth:`begin_create_deployment` then :meth:`wait_deployment`."""
        self.begin_create_deployment(
            name, version, instance_count=instance_count, environment_variables=environment_variables, change=change
        )
        return self.wait_deployment(name, deadline_s=deadline_s)

    def begin_create_deployment(
        self,
        name: str,
        version: str,
        *,
        instance_count: int = 1,
        environment_variables: dict[str, str] | None = None,
        change: Change | None = None,
    ) -> dict:
        """Ask for the deployment; returns at once with its ``provisioning_state`` (Creating or Updating).

        Refusals the endpoint can give at once (a bad reference, a version not ``stage=prod``) raise here.
        """
        body: dict[str, object] = {"model": str(version), "instance_count": instance_count}
        if environment_variables:
            body["environment_variables"] = environment_variables
        return self._control("PUT", f"deployments/{name}", body, headers=_change(change))

    def scale_deployment(
        self, name: str, instance_count: int, *, change: Change | None = None, deadline_s: float = 300.0
    ) -> dict:
        """The deployment with ``instance_count`` instances, its traffic served meanwhile:
        :meth:`begin_scale_deployment` then :meth:`wait_deployment`."""
        self.begin_scale_deployment(name, instance_count, change=change)
        return self.wait_deployment(name, deadline_s=deadline_s)

    def begin_scale_deployment(self, name: str, instance_count: int, *, change: Change | None = None) -> dict:
        """Ask for another instance count; returns at once (``provisioning_state`` Updating, or the status if
        it already has that many).

        The same PUT as a creation, with the deployment's model and environment as the endpoint has them and
        the ETag they were read with (``If-Match``): if the deployment changed in between, 412, never a
        replacement by what was read.
        """
        view = self.read()
        spec = view.state["deployments"].get(name)
        if spec is None:
            raise EndpointError(404, "not_found", f"no deployment named {name!r}")
        body: dict[str, object] = {"model": spec["model"], "instance_count": instance_count}
        if spec.get("environment_variables"):
            body["environment_variables"] = spec["environment_variables"]
        headers = {"If-Match": view.etag, **_change(change)}
        return self._control("PUT", f"deployments/{name}", body, headers=headers)

    def wait_deployment(self, name: str, *, deadline_s: float = 300.0, poll_s: float = 0.2) -> dict:
        """Poll until the deployment's operation ends: its status on success; its error raised on failure."""
        deadline = time.monotonic() + deadline_s
        while True:
            status = self.deployment(name)
            state = status.get("provisioning_state")
            if state == "Succeeded":
                return status
            if state == "Failed":
                error = status.get("error") or status.get("last_operation", {}).get("error") or {}
                code = error.get("code", "deployment_failed")
                raise EndpointError(error.get("status", 503), code, error.get("message", f"deployment {name!r} failed"))
            if time.monotonic() > deadline:
                raise EndpointError(504, "deadline", f"deployment {name!r} still {state} after {deadline_s:g} s")
            time.sleep(poll_s)

    def delete_deployment(self, name: str, *, change: Change | None = None) -> dict:
        return self._control("DELETE", f"deployments/{name}", headers=_change(change))

    def deployment(self, name: str) -> dict:
        return self._control("GET", f"deployments/{name}")

    def _control(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> dict:
        return self._send(method, path, body, headers).json()

    def _send(self, method: str, path: str, body: dict | None = None, headers: dict | None = None) -> httpx.Response:
        headers = {**(headers or {}), "Authorization": f"Bearer {self.control_key}"}
        try:
            response = self.http.request(method, f"/control/{path}", json=body, headers=headers)
        except httpx.TransportError as exc:
            raise TransientBackendError(f"endpoint {self.url} unreachable: {exc}") from exc
        _raise_for(response)
        return response


def _change(change: Change | None) -> dict[str, str]:
    if change is None:
        return {}
    headers = {"x-nerops-actor": change.actor, "x-nerops-reason": change.reason}
    if change.correlation_id:
        headers["x-nerops-correlation-id"] = change.correlation_id
    return headers


def _raise_for(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        err = response.json()["error"]
        raise EndpointError(response.status_code, err["code"], err["message"])
    except (ValueError, KeyError, TypeError):
        raise EndpointError(response.status_code, "http_error", response.text[:200]) from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class LocalEndpoint:
    """An endpoint process started in the background, on 127.0.0.1 and a free port."""

    name: str
    url: str
    key: str
    process: subprocess.Popen
    log_path: Path
    control_key: str = ""  # the control credential the endpoint was started with

    @classmethod
    def start(
        cls, settings: Settings, name: str = "resume-ner", *, port: int | None = None, export_interval: float = 5.0
    ) -> LocalEndpoint:
        folder = settings.state / "endpoints" / name
        folder.mkdir(parents=True, exist_ok=True)
        port = port or free_port()
        log_path = folder / "endpoint.log"
        env = {**os.environ, "NEROPS_STATE_DIR": str(settings.state)}
        with log_path.open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "nerops.serving.endpoint", "--name", name, "--port", str(port),
                 "--export-interval", str(export_interval)],
                env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise NeropsError(f"endpoint {name} exited with code {process.returncode}; see {log_path}")
            try:
                if httpx.get(f"{url}/health", timeout=1.0).status_code == 200:
                    key = json.loads((folder / "keys.json").read_text())["primary"]
                    return cls(name, url, key, process, log_path, control_key(settings))
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        process.kill()
        raise NeropsError(f"endpoint {name} did not come up in 180 s; see {log_path}")

    def client(self) -> EndpointClient:
        return EndpointClient(self.url, self.key, control_key=self.control_key or None)

    def stop(self, timeout: float = 30.0) -> None:
        """Graceful stop (telemetry flushed, workers stopped); killed if it does not end in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
