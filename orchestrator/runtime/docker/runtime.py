"""The Docker Engine implementation of ContainerRuntime (docker SDK, off the event loop).

Every blocking call goes through `_call`, which runs it in a worker thread, retries transient
daemon errors with tenacity and maps the rest to our errors. Idempotency by status code, as
dockerspawner does: 404 on stop/remove means already gone, 409 on create means someone else won.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from datetime import datetime
from collections.abc import AsyncIterator, Iterator
from typing import Any, Callable, TypeVar

import anyio
import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound

from orchestrator.core.errors import DependencyRejected, DependencyUnavailable, dependency_error
from orchestrator.core.logs import clip_tail
from orchestrator.rules.isolation import HOST_NETWORK, AgentNetwork, gateway_of, pick_subnet
from orchestrator.core.models import ContainerInfo, ContainerStatus, Health
from orchestrator.rules.naming import Label
from orchestrator.settings import Settings
from orchestrator.runtime import ContainerSpec, NameTaken, WatchEvent
from orchestrator.runtime.dockerapi import DockerAPI
from orchestrator.runtime.docker.watch import watch_docker

log = logging.getLogger(__name__)
T = TypeVar("T")

_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_IN_STATUS = re.compile(r"^Exited \((-?\d+)\)")


def _parse_time(value: Any) -> datetime | None:
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).astimezone()
    if isinstance(value, str) and value:
        try:
            return datetime.fromisoformat(value[:26].rstrip("Z") if "." in value else value.rstrip("Z"))
        except ValueError:
            return None
    return None


def _info_from_list(row: dict[str, Any]) -> ContainerInfo:
    """A sparse list row (one API call for all containers) to ContainerInfo; health is in Status."""
    status_text = row.get("Status", "")
    match = _HEALTH_IN_STATUS.search(status_text)
    health = Health.none
    if match:
        health = Health.starting if "starting" in match.group(1) else Health(match.group(1))
    return ContainerInfo(
        id=row["Id"],
        name=row["Names"][0].lstrip("/"),
        status=ContainerStatus(row.get("State", "created")),
        health=health,
        labels=row.get("Labels") or {},
        created_at=_parse_time(row.get("Created")),
        exit_code=int(exit_match.group(1)) if (exit_match := _EXIT_IN_STATUS.match(status_text)) else None,
    )


def _info_from_inspect(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status", "none")
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        status=ContainerStatus(state.get("Status", "created")),
        health=Health(health) if health in Health._value2member_map_ else Health.none,
        labels=attrs.get("Config", {}).get("Labels") or {},
        created_at=_parse_time(attrs.get("Created")),
        exit_code=state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None,
    )


def _network_gone(network: str) -> DependencyUnavailable:
    """Removed behind our back: the next trigger makes it again (the caller forgets its copy)."""
    return DependencyUnavailable(
        f"agent network '{network}' is gone; retry to have it made again", retry_after=1, dependency="docker"
    )


def _network_info(attrs: dict[str, Any]) -> AgentNetwork:
    configs = (attrs.get("IPAM") or {}).get("Config") or [{}]
    subnet = configs[0].get("Subnet")
    gateway = configs[0].get("Gateway") or (gateway_of(subnet) if subnet else None)
    bridge = (attrs.get("Options") or {}).get("com.docker.network.bridge.name") or f"br-{attrs['Id'][:12]}"
    return AgentNetwork(name=attrs["Name"], subnet=subnet, gateway=gateway, bridge=bridge)


class DockerRuntime(DockerAPI):
    """ContainerRuntime on one Docker engine."""

    engine = "docker"

    @classmethod
    def from_settings(cls, settings: Settings) -> "DockerRuntime":
        return cls(
            base_url=settings.docker_host, pool_size=settings.docker_pool_size,
            timeout_s=settings.docker_timeout_s, retries=settings.docker_retries,
        )

    async def get(self, name: str) -> ContainerInfo | None:
        def inspect() -> ContainerInfo | None:
            try:
                return _info_from_inspect(self.client.api.inspect_container(name))
            except NotFound:
                return None

        return await self._call("inspect", inspect)

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        """One list call, filtered by the daemon on our scope label (sparse: no N+1 inspects)."""
        filters = {"label": [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"]}
        rows = await self._call("list", lambda: self.client.api.containers(all=True, filters=filters))
        return [_info_from_list(r) for r in rows]

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        await self._call("create", functools.partial(self._create, spec))
        try:
            await self._call("start", functools.partial(self._start_new, spec))
        except BaseException:
            # No half-made container: a container that cannot start is removed, then we report.
            with anyio.CancelScope(shield=True):
                await self.remove(spec.name)
            raise
        info = await self.get(spec.name)
        if info is None:
            raise DependencyUnavailable(f"container {spec.name} vanished right after start", dependency="docker")
        return info

    def _start_new(self, spec: ContainerSpec) -> None:
        try:
            self.client.api.start(spec.name)
        except NotFound as exc:
            if "network" not in str(exc.explanation or ""):
                raise
            raise _network_gone(spec.network) from None

    def _create(self, spec: ContainerSpec) -> None:
        restart: dict[str, Any] = {"Name": spec.restart_policy}
        if spec.restart_policy == "on-failure":
            restart["MaximumRetryCount"] = spec.restart_max
        try:
            host_config = self.client.api.create_host_config(
                mem_limit=spec.memory,
                nano_cpus=int(spec.cpus * 1e9),
                pids_limit=spec.pids,
                restart_policy=restart,
                network_mode=spec.network,
                init=True,
                log_config={"type": "json-file", "config": {"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)}},
                # Hardening (ContainerSpec's defaults): no capabilities at all unless an operator added some,
                # no setuid/file-capability gains, nothing writable but the tmpfs, no host paths, no socket.
                cap_drop=["ALL"],
                cap_add=list(spec.cap_add) or None,
                security_opt=["no-new-privileges:true"] if spec.no_new_privileges else None,
                read_only=spec.read_only_root,
                tmpfs=dict(spec.tmpfs) or None,
                runtime=spec.runtime,
            )
        except DockerException as exc:  # the SDK's own check of a value (e.g. memory "lots"): no retry helps
            raise DependencyRejected(f"Docker cannot use the container's settings: {exc}", dependency="docker") from None
        try:
            self.client.api.create_container(
                image=spec.image,
                name=spec.name,
                labels=spec.labels,
                environment=spec.env,
                user=spec.user or "",
                host_config=host_config,
                stop_timeout=spec.stop_timeout_s,
                detach=True,
                stdin_open=spec.stdin,  # a warm member's handover channel (runtime.docker.pool)
            )
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
        """The agent network `name`, created when missing (idempotent; never removed here).

        An existing network is used as it is (labelled ours or an operator's own). A new one gets
        `subnet`, or the first subnet of `pool` that no network on this engine overlaps; when two
        processes race for a subnet, the engine refuses the overlap and the loser finds the
        winner's network by name on its next round.
        """
        if name == HOST_NETWORK:
            return AgentNetwork(name=name)
        return await self._call(
            "network", functools.partial(self._ensure_network, name, labels=labels, subnet=subnet, pool=pool,
                                         prefix=prefix, options=options or {})
        )

    def _find_network(self, name: str) -> dict[str, Any] | None:
        rows = [n for n in self.client.api.networks(names=[name]) if n.get("Name") == name]
        if not rows:
            return None
        return self.client.api.inspect_network(rows[0]["Id"])

    def _ensure_network(
        self, name: str, *, labels: dict[str, str], subnet: str | None, pool: list[str], prefix: int,
        options: dict[str, str],
    ) -> AgentNetwork:
        for attempt in range(8):  # bounded: each round either finds the network or takes a subnet nobody holds
            if attempt:
                # Another process's create of this name (or of that subnet) may not be visible yet: give it a moment.
                time.sleep(min(0.05 * 2 ** attempt, 1.0))
            found = self._find_network(name)
            if found is not None:
                return _network_info(found)
            chosen = subnet
            if chosen is None:
                taken = [cfg["Subnet"] for n in self.client.api.networks()
                         for cfg in ((n.get("IPAM") or {}).get("Config") or []) if cfg.get("Subnet")]
                chosen = pick_subnet(pool=pool, prefix=prefix, taken=taken)
                if chosen is None:
                    raise DependencyRejected(
                        f"no free /{prefix} subnet left in ORCH_AGENT_SUBNET_POOL {pool} for agent network {name}; "
                        "widen the pool or set ORCH_AGENT_SUBNET", dependency="docker",
                    )
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=chosen, gateway=gateway_of(chosen))])
            try:
                self.client.api.create_network(
                    name, driver="bridge", ipam=ipam, labels=labels, options=options, check_duplicate=True,
                )
            except APIError as exc:
                text = str(exc.explanation or exc)
                if exc.status_code == 409 or "already exists" in text:
                    continue  # another process made it: found by name next round
                if "overlap" in text and subnet is None:
                    continue  # a subnet taken since we listed: pick again
                raise dependency_error(
                    "docker", f"cannot create agent network {name} ({chosen}): {text}", status=exc.status_code
                ) from None
            log.info("created agent network %s (%s)", name, chosen)
        found = self._find_network(name)
        if found is None:
            raise DependencyUnavailable(f"agent network {name} could not be created; retry shortly", dependency="docker")
        return _network_info(found)

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
