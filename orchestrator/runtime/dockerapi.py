"""The Docker Engine API shared by the Docker and Swarm runtimes: one client, one way to call it.

Every blocking call goes through `DockerAPI._call`, which runs it in a worker thread, retries transient daemon
errors (core.retry: tenacity, with jitter) and maps the rest to our errors. Neither engine inherits the other;
both stand on this.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, TypeVar

import anyio
import docker
import requests
from docker.errors import APIError, DockerException, NotFound

from orchestrator.core.errors import ConfigurationError, DependencyRejected, DependencyUnavailable, dependency_error
from orchestrator.core.retry import engine_retry
from orchestrator.rules.isolation import pick_subnet

T = TypeVar("T")


def transient(exc: BaseException) -> bool:
    """Daemon hiccups worth a retry: connection trouble and 5xx other than a name conflict."""
    if isinstance(exc, requests.exceptions.ConnectionError | requests.exceptions.Timeout):
        return True
    return isinstance(exc, APIError) and not isinstance(exc, NotFound) and (exc.status_code or 0) >= 500


class DockerAPI:
    """One engine's API: a lazily built client with a pool, and `_call` for every blocking request."""

    def __init__(
        self, *, base_url: str | None = None, pool_size: int = 32, timeout_s: float = 30.0, retries: int = 3
    ) -> None:
        self._base_url = base_url
        self._pool_size = pool_size
        self._timeout_s = timeout_s
        self._retries = retries
        self._client: docker.DockerClient | None = None
        self._client_lock = threading.Lock()
        # docker-py's pool must be at least as large as the threads we let talk to it.
        self._limiter = anyio.CapacityLimiter(pool_size)

    @property
    def client(self) -> docker.DockerClient:
        """Built lazily inside a worker thread: docker-py asks the daemon for its API version here."""
        with self._client_lock:
            if self._client is None:
                kwargs: dict[str, Any] = {"timeout": int(self._timeout_s), "max_pool_size": self._pool_size}
                self._client = (
                    docker.DockerClient(base_url=self._base_url, **kwargs)
                    if self._base_url
                    else docker.from_env(**kwargs)
                )
            return self._client

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    async def _call(self, what: str, fn: Callable[[], T]) -> T:
        retrying = engine_retry(attempts=self._retries, transient=transient).wraps(fn)
        try:
            return await anyio.to_thread.run_sync(retrying, limiter=self._limiter)
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise DependencyUnavailable(
                f"Docker engine unreachable during {what}: {type(exc).__name__}", dependency="docker"
            ) from None
        except APIError as exc:
            # By status, with the engine's own words: 4xx (a missing network, a bad value) is permanent.
            verb = "failed" if transient(exc) else "refused"
            raise dependency_error(
                "docker", f"Docker engine {verb} {what}: {exc.explanation or exc}", status=exc.status_code
            ) from None
        except DockerException as exc:
            # docker.from_env() raises a bare DockerException when the socket is missing.
            raise DependencyUnavailable(f"Docker engine unavailable during {what}: {exc}", dependency="docker") from None

    async def image_id(self, image: str) -> tuple[str, dict[str, str]] | None:
        """The id the reference names on this engine and the image's labels (a pool's drift and warm-mode check);
        None when the engine lacks it. On a swarm: the manager's copy (every node must have the same)."""
        def inspect() -> tuple[str, dict[str, str]] | None:
            try:
                attrs = self.client.api.inspect_image(image)
            except NotFound:  # ImageNotFound is a NotFound
                return None
            return attrs["Id"], (attrs.get("Config") or {}).get("Labels") or {}

        return await self._call("image", inspect)

    async def ping(self) -> None:
        await self._call("ping", lambda: self.client.ping())

    async def preflight(self, *, network: str) -> None:
        """Start-up check of what only the engine can judge: the agent network exists."""
        if network in ("host", "bridge", "none", "default") or network.startswith("container:"):
            return

        def inspect() -> None:
            try:
                self.client.api.inspect_network(network)
            except NotFound:
                raise ConfigurationError(
                    f"ORCH_AGENT_NETWORK={network!r}: the Docker engine has no such network; "
                    f"create it (docker network create {network}) or set another"
                ) from None

        await self._call("network inspect", inspect)

    def free_subnet(self, *, pool: list[str], prefix: int, purpose: str) -> str:
        """The first /prefix of `pool` that no network of this engine overlaps (blocking; for a network about to be made)."""
        taken = [cfg["Subnet"] for n in self.client.api.networks()
                 for cfg in ((n.get("IPAM") or {}).get("Config") or []) if cfg.get("Subnet")]
        chosen = pick_subnet(pool=pool, prefix=prefix, taken=taken)
        if chosen is None:
            raise DependencyRejected(
                f"no free /{prefix} subnet left in ORCH_AGENT_SUBNET_POOL {pool} for {purpose}; "
                "widen the pool or set ORCH_AGENT_SUBNET", dependency="docker",
            )
        return chosen

    def new_client(self) -> docker.DockerClient:
        """A client of its own, for a blocking event stream in a thread (the shared pool stays free)."""
        return docker.DockerClient(base_url=self._base_url) if self._base_url else docker.from_env()
