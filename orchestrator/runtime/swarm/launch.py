"""Swarm agents made: the service with its short-lived secrets, the wait for its task, and the agents' overlay.

A mixin of the runtime. Secrets: every secret env value (runtime.SECRET_ENV_KEYS) becomes a Docker secret of its
own, made just before the service and removed with it (`remove`), labelled with the service's name so a leftover
is found again; the service spec holds only its id. The value reaches the agent as a file under /run/secrets that
a one-line prelude exports before exec'ing the image's own command (read from the image on the manager).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import secrets as token
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio
import docker
from docker.errors import APIError, ImageNotFound, NotFound

from orchestrator.core.clock import parse_engine_time
from orchestrator.core.errors import ContainerFailed, DependencyRejected, DependencyUnavailable, LimitExceeded, dependency_error
from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules.isolation import HOST_NETWORK, AgentNetwork
from orchestrator.rules.naming import LABEL_PREFIX, Label
from orchestrator.runtime import SECRET_ENV_KEYS, ContainerSpec, NameTaken
from orchestrator.runtime.swarm.rules import (
    constraints_for,
    current_task,
    secret_name,
    service_name,
    service_spec,
    task_status,
    unschedulable,
)

log = logging.getLogger(__name__)
SERVICE_LABEL = LABEL_PREFIX + "service"  # on each secret: the service it belongs to


def _name_conflict(exc: APIError) -> bool:
    return exc.status_code == 409 or (
        exc.status_code == 500 and "conflicts with an existing object" in str(exc.explanation or exc)
    )


class ServiceLaunch:
    """`create_and_start`, the secrets that go with it, and `ensure_network` (the Swarm runtime is a NetworkProvider)."""

    _start_timeout_s: float
    _restart_delay_s: float
    _placement: Mapping[str, list[str]]
    _spread: str | None
    _no_room_retry_after_s: float
    _commands: dict[str, list[str]]

    if TYPE_CHECKING:  # provided by the runtime and DockerAPI
        @property
        def client(self) -> docker.DockerClient: ...

        async def _call(self, what: str, fn: Any) -> Any: ...

        def _count(self, kind: str) -> None: ...

        def _node_name(self, node_id: str | None) -> str | None: ...

        def _tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]: ...

        def free_subnet(self, *, pool: list[str], prefix: int, purpose: str) -> str: ...

        async def remove(self, name: str) -> None: ...

    # ---- the service ----------------------------------------------------------------------------

    def _create(self, body: dict[str, Any]) -> str:
        self._count("create")
        try:
            created = self.client.api.create_service(
                body["TaskTemplate"], name=body["Name"], labels=body["Labels"], mode=body["Mode"]
            )
        except APIError as exc:
            if _name_conflict(exc):
                raise NameTaken(body["Name"]) from None  # never retried: the name is someone else's
            raise
        return str(created["ID"])

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        """Secrets, then the service, then wait for its task to run; what cannot run is removed with its secrets."""
        name = service_name(spec.name)
        hidden = {k: v for k, v in spec.env.items() if k in SECRET_ENV_KEYS and v}
        command = await self._call("image inspect", functools.partial(self._image_command, spec.image)) if hidden else None
        made: dict[str, tuple[str, str]] = {}
        try:
            if hidden:
                made = await self._call("secret create", functools.partial(self._make_secrets, name, hidden, spec.labels))
            body = service_spec(
                name=name, image=spec.image, labels=spec.labels, env=spec.env, memory=spec.memory,
                cpus=spec.cpus, pids=spec.pids, network=spec.network, restart_policy=spec.restart_policy,
                restart_max=spec.restart_max, restart_delay_s=self._restart_delay_s, stop_timeout_s=spec.stop_timeout_s,
                constraints=constraints_for(spec.labels, self._placement), spread=self._spread,
                user=spec.user, read_only_root=spec.read_only_root, tmpfs=spec.tmpfs, cap_add=spec.cap_add,
                log_max_size=spec.log_max_size, log_max_files=spec.log_max_files, secrets=made, command=command,
            )
            service_id = await self._call("service create", functools.partial(self._create, body))
        except BaseException:
            if made:
                with anyio.CancelScope(shield=True):
                    await self._call("secret remove", functools.partial(self._remove_secrets, name, only=made))
            raise
        try:
            return await self._wait_started(service_id, body=body, image=spec.image)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.remove(service_id)
            raise

    def _image_command(self, image: str) -> list[str]:
        """The image's entrypoint + cmd (cached per reference): what the secret prelude execs."""
        if image not in self._commands:
            self._count("image")
            try:
                config = self.client.api.inspect_image(image).get("Config") or {}
            except ImageNotFound:
                raise DependencyUnavailable(
                    f"agent image '{image}' is not on the swarm manager: the Swarm runtime reads its command there to hand "
                    "the agent its secrets as files; load or pull it on the manager too", retry_after=60, dependency="docker",
                ) from None
            command = [*(config.get("Entrypoint") or []), *(config.get("Cmd") or [])]
            if not command:
                raise DependencyRejected(f"agent image '{image}' names no command to run", dependency="docker")
            self._commands[image] = command
        return self._commands[image]

    def _make_secrets(self, service: str, values: Mapping[str, str], labels: Mapping[str, str]) -> dict[str, tuple[str, str]]:
        """One fresh Docker secret per value (random suffix: never meets a leftover), labelled with its service."""
        keep = {k: v for k, v in labels.items() if k in (Label.MANAGED, Label.SCOPE)}
        made: dict[str, tuple[str, str]] = {}
        try:
            for key, value in values.items():
                sname = secret_name(service, key, token.token_hex(4))
                self._count("secret")
                created = self.client.api.create_secret(sname, value.encode(), labels={**keep, SERVICE_LABEL: service})
                made[key] = (str(created["ID"]), sname)
        except BaseException:
            self._remove_secrets(service, only=made)
            raise
        return made

    def _remove_secrets(self, service: str, *, only: Mapping[str, tuple[str, str]] | None = None) -> None:
        """The secrets of a service (all found by its label, or those just made); gone ones are fine."""
        ids = [sid for sid, _ in only.values()] if only is not None else [
            s["ID"] for s in self.client.api.secrets(filters={"label": f"{SERVICE_LABEL}={service}"})
        ]
        for sid in ids:
            try:
                self._count("secret remove")
                self.client.api.remove_secret(sid)
            except NotFound:
                pass

    async def _wait_started(self, service_id: str, *, body: dict[str, Any], image: str) -> ContainerInfo:
        """Poll the service's tasks (one call each) every 30 ms for 3 s, then every 250 ms, until its task runs."""
        started = time.monotonic()
        deadline = started + self._start_timeout_s
        while True:
            tasks = await self._call("task list", functools.partial(self._tasks, {"service": service_id}))
            task = current_task(tasks)
            status, _, reason, health = task_status(task, earlier_tasks=max(len(tasks) - 1, 0))
            if status is ContainerStatus.running and task is not None:
                # Built from what we sent and the task just read: no extra inspect on the hot path.
                node = await self._call("node list", functools.partial(self._node_name, task.get("NodeID")))
                return ContainerInfo(
                    id=service_id, name=body["Name"], status=status, health=health, labels=body["Labels"],
                    created_at=parse_engine_time(task.get("CreatedAt")), node=node,
                )
            info = ContainerInfo(id=service_id, name=body["Name"], status=status, reason=reason)
            why = unschedulable(reason)
            if why == "resources":
                raise LimitExceeded(
                    f"the swarm has no room for this agent: {reason} (its CPU/memory reservations fit on no node)",
                    retry_after=self._no_room_retry_after_s, details={"rule": "swarm capacity", "reason": reason},
                )
            if why == "constraints":
                raise DependencyUnavailable(
                    f"no swarm node satisfies this agent's placement: {reason}",
                    retry_after=self._no_room_retry_after_s, details={"reason": reason},
                )
            if status in (ContainerStatus.dead, ContainerStatus.exited):
                if reason and "No such image" in reason:
                    raise DependencyUnavailable(
                        f"agent image '{image}' is not on every swarm node: load it on each node or serve it "
                        "from a registry every node reaches", retry_after=60,
                    )
                raise ContainerFailed(f"service {info.name} did not reach running: {reason or status.value}")
            if time.monotonic() > deadline:
                if why == "unavailable":
                    raise DependencyUnavailable(
                        f"no swarm node took this agent within {self._start_timeout_s:g} s: {reason} "
                        "(nodes down, draining or still rejoining)",
                        retry_after=self._no_room_retry_after_s, details={"reason": reason},
                    )
                raise ContainerFailed(
                    f"service {info.name} not running after {self._start_timeout_s:g} s (task: {reason or status.value})"
                )
            await asyncio.sleep(0.03 if time.monotonic() - started < 3 else 0.25)


    # ---- the agents' network ----------------------------------------------------------------------

    async def ensure_network(
        self, name: str, *, labels: dict[str, str], subnet: str | None, pool: list[str], prefix: int,
        options: dict[str, str] | None = None,
    ) -> AgentNetwork:
        """The overlay network `name` (swarm-scoped: every node can run its agents), created when missing.

        Bridge options (a host interface name, inter-container traffic) mean nothing to an overlay and are not
        passed. No gateway is reported: an overlay's gateway is no host, so a loopback LiveKit URL cannot be
        rewritten to it (set ORCH_AGENT_LIVEKIT_URL to an address the nodes reach). Egress leaves each node
        through its docker_gwbridge, NATed by that node's engine.
        """
        if name == HOST_NETWORK:
            return AgentNetwork(name=name)
        return await self._call("network", functools.partial(self._ensure_overlay, name, labels=labels, subnet=subnet,
                                                                pool=pool, prefix=prefix))

    def _ensure_overlay(self, name: str, *, labels: dict[str, str], subnet: str | None, pool: list[str], prefix: int) -> AgentNetwork:
        for attempt in range(8):  # bounded: each round finds the network or takes a subnet nobody holds
            if attempt:
                time.sleep(min(0.05 * 2 ** attempt, 1.0))  # a racing manager's create may not be visible yet
            found = [n for n in self.client.api.networks(names=[name]) if n.get("Name") == name]
            if found:
                return _overlay_info(self.client.api.inspect_network(found[0]["Id"]))
            chosen = subnet or self.free_subnet(pool=pool, prefix=prefix, purpose=f"overlay {name}")
            ipam = docker.types.IPAMConfig(pool_configs=[docker.types.IPAMPool(subnet=chosen)])
            try:
                self._count("network create")
                self.client.api.create_network(name, driver="overlay", ipam=ipam, labels=labels, check_duplicate=True)
            except APIError as exc:
                text = str(exc.explanation or exc)
                # A racing manager made it first (409, "already exists", or a 500 "name conflicts with an existing
                # object" from the raft store), or took the subnet: look again.
                if _name_conflict(exc) or "already exists" in text or ("overlap" in text and subnet is None):
                    continue
                raise dependency_error("docker", f"cannot create overlay {name} ({chosen}): {text}", status=exc.status_code) from None
            log.info("created agents' overlay network %s (%s)", name, chosen)
        raise DependencyUnavailable(f"overlay network {name} could not be created; retry shortly", dependency="docker")


def _overlay_info(attrs: dict[str, Any]) -> AgentNetwork:
    configs = (attrs.get("IPAM") or {}).get("Config") or [{}]
    return AgentNetwork(name=attrs["Name"], subnet=configs[0].get("Subnet"))
