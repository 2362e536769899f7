"""A real Jaeger (all-in-one: OTLP receivers, in-memory store, query API) on loopback ports, for tracing tests.

The tracing tests assert span trees a real collector received, so they start this instead of mocking an
exporter. The binary comes from scripts/build-jaeger (built from Jaeger's Go module, cached per version).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

JAEGER_VERSION = os.environ.get("JAEGER_VERSION", "v1.76.0")
CACHE_BIN = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agent-orchestrator" / "bin"


def jaeger_binary() -> Path:
    """The cached binary of the pinned version; a clear error (not a skip) when scripts/build-jaeger has not run."""
    path = CACHE_BIN / f"jaeger-{JAEGER_VERSION}"
    if not os.access(path, os.X_OK):
        raise FileNotFoundError(f"{path} is missing: run scripts/build-jaeger (scripts/test does)")
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _config(*, otlp_grpc: int, otlp_http: int, query_http: int, query_grpc: int, health: int, otlp_http_host: str) -> str:
    """Only what the tests use, every listener on 127.0.0.1 (the defaults bind all interfaces, fixed ports) except
    OTLP/HTTP when agents must reach it: then on their network's gateway, as the harness's LiveKit also binds."""
    return f"""\
service:
  extensions: [jaeger_storage, jaeger_query, healthcheckv2]
  pipelines:
    traces:
      receivers: [otlp]
      processors: [batch]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics:
      level: none
    logs:
      level: info
extensions:
  healthcheckv2:
    use_v2: true
    http:
      endpoint: 127.0.0.1:{health}
  jaeger_query:
    # On by default: the query service traces itself to 127.0.0.1:4317, which would feed its spans to whatever
    # listens there and retry for 10 s at shutdown.
    enable_tracing: false
    storage:
      traces: memstore
    http:
      endpoint: 127.0.0.1:{query_http}
    grpc:
      endpoint: 127.0.0.1:{query_grpc}
  jaeger_storage:
    backends:
      memstore:
        memory:
          max_traces: 100000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{otlp_grpc}
      http:
        endpoint: {otlp_http_host}:{otlp_http}
processors:
  batch:
    timeout: 100ms
exporters:
  jaeger_storage_exporter:
    trace_storage: memstore
"""


def _env() -> dict[str, str]:
    """The test process's OTEL_* settings are for the code under test (its exporter points here), not for the collector."""
    return {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


@dataclass
class Jaeger:
    """One running Jaeger; `otlp_http_endpoint` / `otlp_grpc_endpoint` are what OTEL_EXPORTER_OTLP_ENDPOINT takes."""

    proc: subprocess.Popen[bytes]
    workdir: Path
    otlp_grpc_port: int
    otlp_http_port: int
    query_port: int
    health_port: int
    otlp_http_host: str = "127.0.0.1"
    _client: httpx.Client = field(default_factory=lambda: httpx.Client(timeout=5.0))

    @property
    def otlp_http_endpoint(self) -> str:
        return f"http://{self.otlp_http_host}:{self.otlp_http_port}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.otlp_grpc_port}"

    @property
    def query_url(self) -> str:
        return f"http://127.0.0.1:{self.query_port}"

    def log_tail(self, n: int = 6000) -> str:
        log = self.workdir / "jaeger.log"
        return log.read_text(errors="replace")[-n:] if log.exists() else ""

    def services(self) -> list[str]:
        resp = self._client.get(f"{self.query_url}/api/services")
        resp.raise_for_status()
        return list(resp.json().get("data") or [])

    def traces(self, service: str, *, operation: str | None = None, lookback: str = "1h", limit: int = 20) -> list[dict[str, Any]]:
        """Traces of a service (optionally those holding an operation), as the query API's JSON (`/api/traces`)."""
        params: dict[str, str | int] = {"service": service, "lookback": lookback, "limit": limit}
        if operation:
            params["operation"] = operation
        resp = self._client.get(f"{self.query_url}/api/traces", params=params)
        resp.raise_for_status()
        return list(resp.json().get("data") or [])

    def spans(self, service: str, *, operation: str | None = None, timeout_s: float = 10.0) -> list[dict[str, Any]]:
        """Every span of the service's traces (of those with `operation`), each with its `serviceName` filled in.

        Polls: exporters batch and the collector batches, so a span sent a moment ago may not be queryable yet.
        An empty answer after `timeout_s` is returned as is; the caller's assertion says what was missing.
        """
        deadline = time.monotonic() + timeout_s
        while True:
            found = []
            for trace in self.traces(service, operation=operation):
                processes = trace.get("processes") or {}
                for span in trace.get("spans") or []:
                    proc = processes.get(span.get("processID"), {})
                    found.append({**span, "serviceName": proc.get("serviceName")})
            if found or time.monotonic() >= deadline:
                return found
            time.sleep(0.1)

    def stop(self) -> None:
        self._client.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def start_jaeger(*, binary: Path | None = None, timeout_s: float = 30.0, agent_gateway: str | None = None) -> Jaeger:
    """Start Jaeger on free loopback ports; returns once its health check and query API both answer.

    `agent_gateway`: the agents' network gateway; OTLP/HTTP then listens there instead of on loopback, so agent
    containers reach it through the host filter (its port comes from the kernel's ephemeral range, which the
    harness lets through: devtools/agent_net.harness_host_ports) and the test process still does.
    """
    binary = binary or jaeger_binary()
    workdir = Path(tempfile.mkdtemp(prefix="jaeger-"))
    ports = {name: _free_port() for name in ("otlp_grpc", "otlp_http", "query_http", "query_grpc", "health")}
    host = agent_gateway or "127.0.0.1"
    (workdir / "config.yaml").write_text(_config(**ports, otlp_http_host=host))
    with (workdir / "jaeger.log").open("wb") as log:
        proc = subprocess.Popen([str(binary), "--config", str(workdir / "config.yaml")], cwd=workdir, stdout=log, stderr=subprocess.STDOUT,
                                env=_env())
    jaeger = Jaeger(proc=proc, workdir=workdir, otlp_grpc_port=ports["otlp_grpc"], otlp_http_port=ports["otlp_http"],
                    query_port=ports["query_http"], health_port=ports["health"], otlp_http_host=host)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jaeger exited with {proc.returncode}:\n{jaeger.log_tail()}")
            try:
                healthy = jaeger._client.get(f"http://127.0.0.1:{ports['health']}/status").status_code == 200
                if healthy and jaeger._client.get(f"{jaeger.query_url}/api/services").status_code == 200:
                    return jaeger
            except httpx.TransportError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise TimeoutError(f"jaeger not ready within {timeout_s}s:\n{jaeger.log_tail()}")
            time.sleep(0.05)
    except BaseException:
        jaeger.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        raise


@contextmanager
def running_jaeger(*, timeout_s: float = 30.0, agent_gateway: str | None = None) -> Iterator[Jaeger]:
    """Jaeger for the duration of a block; its log is printed when the block fails, its files always removed."""
    jaeger = start_jaeger(timeout_s=timeout_s, agent_gateway=agent_gateway)
    try:
        yield jaeger
    except BaseException:
        print(f"\n==== jaeger log ====\n{jaeger.log_tail()}")
        raise
    finally:
        jaeger.stop()
        shutil.rmtree(jaeger.workdir, ignore_errors=True)
