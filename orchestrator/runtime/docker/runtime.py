"""The Docker Engine implementation of ContainerRuntime (docker SDK, off the event loop).

Every blocking call goes through `_call`, which runs it in a worker thread, retries transient
daemon errors with tenacity and maps the rest to our errors. Idempotency by status code, as
dockerspawner does: 404 on stop/remove means already gone, 409 on create means someone else won.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable

import anyio
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from orchestrator.core.bounded import Newest
from orchestrator.core.errors import ConfigurationError, DependencyRejected, DependencyUnavailable
from orchestrator.core.logs import clip_tail
from orchestrator.core.models import ContainerInfo
from orchestrator.rules.isolation import HOST_NETWORK, AgentNetwork, HostPort
from orchestrator.rules.naming import Label, retired_name
from orchestrator.runtime import ContainerSpec, NameTaken, WatchEvent
from orchestrator.runtime.docker import hostfilter, networks, probe
from orchestrator.runtime.docker.spec import (
    create_kwargs, host_config_kwargs, info_from_inspect, info_from_list, last_exit, with_last_exit,
)
from orchestrator.runtime.docker.watch import watch_docker
from orchestrator.runtime.dockerapi import DockerAPI
from orchestrator.settings import Settings

log = logging.getLogger(__name__)


def _network_gone(network: str) -> DependencyUnavailable:
    """Removed behind our back: the next trigger makes it again (the caller forgets its copy)."""
    return DependencyUnavailable(
        f"agent network '{network}' is gone; retry to have it made again", retry_after=1, dependency="docker"
    )


LAST_EXITS_KEPT = 1024  # names whose last exit is remembered; far more than the agents one engine runs at once


class DockerRuntime(DockerAPI):
    """ContainerRuntime on one Docker engine."""

    engine = "docker"
    starts_by_itself = False  # a `created` container is one whose start failed or never came: start it

    def __init__(self, *, agent_runtime: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._agent_runtime = agent_runtime  # ORCH_AGENT_RUNTIME: checked against the engine's runtimes at start
        # Last non-zero exit per container name (seen in a list, an inspect or a `die` event): a restarted agent
        # shows why it restarted (spec.with_last_exit). Forgotten when the container is removed or made again,
        # and bounded: the `die` event of a removal arrives after the removal forgot the name.
        self._last_exit: Newest[str, int] = Newest(cap=LAST_EXITS_KEPT)

    def note_exit(self, name: str, code: int) -> None:
        if code:
            self._last_exit.put(name, code)

    def _seen(self, info: ContainerInfo) -> ContainerInfo:
        if (code := last_exit(info)) is not None:
            self._last_exit.put(info.name, code)
        return with_last_exit(info, self._last_exit.get(info.name))

    @classmethod
    def from_settings(cls, settings: Settings) -> "DockerRuntime":
        return cls(
            base_url=settings.docker_host, pool_size=settings.docker_pool_size,
            timeout_s=settings.docker_timeout_s, retries=settings.docker_retries, agent_runtime=settings.agent_runtime,
        )

    async def preflight(self, *, network: str) -> None:
        """The agents' network, and ORCH_AGENT_RUNTIME among the engine's runtimes (else every start would fail)."""
        await super().preflight(network=network)
        name = self._agent_runtime
        if not name:
            return
        runtimes = sorted(((await self._call("info", self.client.info)).get("Runtimes") or {}))
        if name not in runtimes:
            raise ConfigurationError(
                f"ORCH_AGENT_RUNTIME={name!r}: this Docker engine has no such runtime (it has: {', '.join(runtimes)}); "
                f'register it in /etc/docker/daemon.json ("runtimes": {{"{name}": {{"path": "/usr/bin/{name}"}}}}) and '
                "restart dockerd, or unset ORCH_AGENT_RUNTIME"
            )

    async def get(self, name: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                return self._seen(info_from_inspect(self.client.api.inspect_container(name)))
            except NotFound:
                return None

        return await self._call("inspect", inspect)

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        """One list call, filtered by the daemon on our scope label (sparse: no N+1 inspects)."""
        filters = {"label": [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"]}
        rows = await self._call("list", lambda: self.client.api.containers(all=True, filters=filters))
        return [self._seen(info_from_list(r)) for r in rows]

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        self._last_exit.pop(spec.name)
        await self._create_started(spec)
        info = await self.get(spec.name)
        if info is None:
            raise DependencyUnavailable(f"container {spec.name} vanished right after start", dependency="docker")
        return info

    async def _create_started(self, spec: ContainerSpec) -> None:
        """Create, then start. No half-made container: one that cannot start is removed, then we report."""
        await self._call("create", functools.partial(self._create, spec))
        try:
            await self._call("start", functools.partial(self._start_new, spec))
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.remove(spec.name)
            raise

    def _start_new(self, spec: ContainerSpec) -> None:
        try:
            self.client.api.start(spec.name)
        except NotFound as exc:
            if "network" not in str(exc.explanation or ""):
                raise
            raise _network_gone(spec.network) from None

    def _create(self, spec: ContainerSpec) -> None:
        try:
            host_config = self.client.api.create_host_config(**host_config_kwargs(spec))
        except DockerException as exc:  # the SDK's own check of a value (e.g. memory "lots"): no retry helps
            raise DependencyRejected(f"Docker cannot use the container's settings: {exc}", dependency="docker") from None
        try:
            self.client.api.create_container(host_config=host_config, **create_kwargs(spec))
        except ImageNotFound:
            raise DependencyUnavailable(
                f"agent image '{spec.image}' is not on this Docker engine; build it with scripts/build-images",
                retry_after=60, dependency="docker",
            ) from None
        except NotFound as exc:
            if "network" not in str(exc.explanation or ""):
                raise
            raise _network_gone(spec.network) from None
        except APIError as exc:
            if exc.status_code == 409:
                raise NameTaken(spec.name) from None
            raise

    async def ensure_network(
        self, name: str, *, labels: dict[str, str], subnet: str | None, pool: list[str], prefix: int,
        options: dict[str, str] | None = None,
    ) -> AgentNetwork:
        """The agent network `name`, made when missing (networks.ensure: idempotent; never removed here)."""
        if name == HOST_NETWORK:
            return AgentNetwork(name=name)
        # The client is built inside the worker thread (it asks the daemon for its version): a daemon that is down
        # is then one of _call's mapped errors, not the SDK's own.
        return await self._call("network", lambda: networks.ensure(
            self.client.api, name, labels=labels, subnet=subnet, pool=pool, prefix=prefix, options=options or {},
        ))

    async def install_host_filter(self, network: AgentNetwork, *, ports: list[HostPort], egress: str) -> tuple[bool, str]:
        """The host filter of an agents' bridge (hostfilter.install): (changed, what is installed)."""
        return await anyio.to_thread.run_sync(functools.partial(hostfilter.install, network, ports=ports, egress=egress))

    async def remove_host_filter(self, network: AgentNetwork) -> bool:
        return await anyio.to_thread.run_sync(hostfilter.remove, network.bridge or "")

    async def host_filter_status(self, network: AgentNetwork) -> dict[str, list[str]]:
        return await anyio.to_thread.run_sync(hostfilter.status, network.bridge or "")

    async def probe_reach(
        self, network: AgentNetwork, *, image: str, user: str, scope: str, targets: list[tuple[str, int]], timeout_s: float = 3.0,
    ) -> dict[str, str]:
        """From a probe container on `network`, hardened like an agent: "host:port" → "ok" or why not (probe.run)."""
        spec = probe.probe_spec(network=network.name, image=image, user=user, scope=scope)
        return await self._call("probe", lambda: probe.run(self.client.api, spec, targets=targets, timeout_s=timeout_s))

    async def remove_network(self, network: AgentNetwork) -> None:
        """Remove an agents' network and its host filter (the engine refuses while containers use it)."""
        def remove() -> None:
            try:
                self.client.api.remove_network(network.name)
            except NotFound:
                pass

        await self._call("network remove", remove)
        if network.managed and network.bridge:
            await self.remove_host_filter(network)

    async def start(self, name: str) -> None:
        await self._call("start", lambda: self.client.api.start(name))

    async def stop(self, name: str, *, timeout_s: int) -> None:
        def stop() -> None:
            try:
                self.client.api.stop(name, timeout=timeout_s)
            except NotFound:
                pass

        await self._call("stop", stop)

    async def remove(self, name: str) -> None:
        self._last_exit.pop(name)

        def remove() -> None:
            try:
                self.client.api.remove_container(name, force=True)
            except NotFound:
                pass
            except APIError as exc:
                # 409 "removal already in progress" means someone else is removing it: done.
                if exc.status_code != 409:
                    raise

        await self._call("remove", remove)

    async def set_aside(self, container_id: str) -> bool:
        """runtime.NameRelease: a rename to `naming.retired_name(id)`; False when it cannot be (gone, daemon trouble)."""
        def rename() -> bool:
            try:
                self.client.api.rename(container_id, retired_name(container_id))
            except NotFound:
                return False
            except APIError as exc:
                if exc.status_code == 400:  # "the same name as its current name": set aside before
                    return True
                log.warning("cannot set %s aside (HTTP %s): removed before its replacement starts", container_id[:12], exc.status_code)
                return False
            return True

        return await self._call("rename", rename)

    async def logs_tail(self, name: str, *, lines: int = 20) -> str:
        def tail() -> str:
            try:
                stream = self.client.api.logs(name, tail=lines, stream=True, follow=False)  # stream alone follows
            except NotFound:
                return ""
            try:
                return clip_tail(stream)  # bounded in bytes, read as a stream: lines can be of any length
            finally:
                close = getattr(stream, "close", None)
                if close is not None:
                    close()

        return await self._call("logs", tail)

    def follow_logs(self, name: str, *, tail: int) -> Iterator[bytes]:
        """Blocking, for `orchestrator logs -f`: the last `tail` lines, then new ones until the container stops."""
        try:
            yield from self.client.api.logs(name, stream=True, follow=True, tail=tail)
        except (requests.exceptions.ConnectionError, DockerException) as exc:
            raise DependencyUnavailable(f"Docker engine unavailable while following {name}: {type(exc).__name__}") from None

    async def stats(self, name: str) -> dict[str, Any] | None:
        def one_shot() -> dict[str, Any] | None:
            try:
                # one_shot: answer at once instead of waiting ~1 s for a second CPU reading (API >= 1.41).
                return self.client.api.stats(name, stream=False, one_shot=True)
            except NotFound:
                return None

        return await self._call("stats", one_shot)

    def open_event_stream(self, filters: dict[str, Any]) -> tuple[Iterator[dict[str, Any]], Callable[[], None]]:
        """A blocking event stream on a client of its own, and the function that ends it (for a watcher thread)."""
        client = self.new_client()
        stream = client.api.events(decode=True, filters=filters)

        def close() -> None:
            stream.close()
            client.close()

        return stream, close

    def watch(self, *, scope: str) -> AsyncIterator[WatchEvent]:
        return watch_docker(self, scope=scope)
