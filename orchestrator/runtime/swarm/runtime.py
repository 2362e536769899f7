"""The Docker Swarm implementation of ContainerRuntime: one replicated service (replicas 1) per key.

It talks to one swarm manager through the docker SDK, off the event loop, with the shared Docker API's
call helper (retries of transient daemon errors, errors mapped to ours). The service name is the
cross-host lock: a create that loses answers 409 or 500 "conflicts with an existing object", both
turned into NameTaken *before* any retry. Reading and changing services are here; creating them (with
their secrets and the agents' overlay) in `launch`, the watch in `watch`, the pure rules in `rules`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Mapping
from typing import Any

import anyio
import docker
from docker.errors import APIError, NotFound

from orchestrator.core.clock import parse_engine_time
from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.models import ContainerInfo
from orchestrator.rules.naming import Label
from orchestrator.settings import Settings
from orchestrator.runtime.dockerapi import DockerAPI
from orchestrator.runtime.swarm.launch import ServiceLaunch
from orchestrator.runtime.swarm.rules import current_task, service_name, task_status
from orchestrator.runtime.swarm.watch import ServiceWatch

log = logging.getLogger(__name__)
_SWARM_ID = re.compile(r"^[a-z0-9]{25}$")  # service names always hold `_` or `-`, so never look like this
_ENGINE_NAME = re.compile(r"-[0-9a-f]{8}$")  # how every service name made by service_name() ends


class SwarmRuntime(ServiceLaunch, ServiceWatch, DockerAPI):
    """ContainerRuntime on a swarm manager: services are the objects, their newest task is the state."""

    engine = "swarm"
    starts_by_itself = False  # create_and_start waits for the task to run, and so does a reuse
    # A NetworkProvider (ServiceLaunch.ensure_network): agents get an overlay per scope (or per client) by default;
    # ORCH_AGENT_NETWORK=host is the operator's explicit opt-out to each node's own network.

    def __init__(
        self,
        *,
        base_url: str | None = None,
        pool_size: int = 32,
        timeout_s: float = 30.0,
        retries: int = 3,
        start_timeout_s: float = 30.0,
        restart_delay_s: float = 1.0,
        placement: Mapping[str, list[str]] | None = None,
        spread: str | None = None,
        poll_s: float = 2.0,
        no_room_retry_after_s: float = 10.0,
    ) -> None:
        super().__init__(base_url=base_url, pool_size=pool_size, timeout_s=timeout_s, retries=retries)
        self._start_timeout_s = start_timeout_s
        self._restart_delay_s = restart_delay_s
        self._placement = dict(placement or {})
        self._spread = spread
        self._poll_s = poll_s
        self._no_room_retry_after_s = no_room_retry_after_s
        self._node_names: dict[str, str] = {}
        self._commands: dict[str, list[str]] = {}  # image -> its entrypoint + cmd (the secret prelude execs it)
        self.calls: dict[str, int] = {}  # API calls by kind, read by the benchmark ("calls per pass")

    @classmethod
    def from_settings(cls, settings: Settings) -> "SwarmRuntime":
        return cls(
            base_url=settings.docker_host, pool_size=settings.docker_pool_size,
            timeout_s=settings.docker_timeout_s, retries=settings.docker_retries,
            start_timeout_s=settings.container_start_timeout_s, restart_delay_s=settings.restart_backoff_s,
            placement=settings.swarm_placement, spread=settings.swarm_spread,
            no_room_retry_after_s=settings.limit_retry_after_s,
        )

    def _count(self, kind: str) -> None:
        self.calls[kind] = self.calls.get(kind, 0) + 1

    # ---- reading ------------------------------------------------------------------------------

    def _services(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self._count("services")
        return self.client.api.services(filters=filters)

    def _tasks(self, filters: dict[str, Any]) -> list[dict[str, Any]]:
        self._count("tasks")
        return self.client.api.tasks(filters=filters)

    def _node_name(self, node_id: str | None) -> str | None:
        """Node hostnames from a cached node list, refreshed only when a task names a node not seen yet."""
        if not node_id:
            return None
        if node_id not in self._node_names:
            self._count("nodes")
            self._node_names = {n["ID"]: n["Description"]["Hostname"] for n in self.client.api.nodes()}
        return self._node_names.get(node_id, node_id[:12])

    def _info(self, svc: Mapping[str, Any], tasks: list[Mapping[str, Any]]) -> ContainerInfo:
        task = current_task(tasks)
        replicas = ((svc.get("Spec") or {}).get("Mode") or {}).get("Replicated", {}).get("Replicas", 1)
        view = task_status(task, earlier_tasks=len(tasks) - 1 if tasks else 0, replicas=replicas)
        spec = svc.get("Spec") or {}
        return ContainerInfo(
            id=svc["ID"], name=spec.get("Name", ""), status=view.status, health=view.health, labels=spec.get("Labels") or {},
            created_at=parse_engine_time(svc.get("CreatedAt")), exit_code=view.exit_code,
            node=self._node_name(task.get("NodeID")) if task else None, reason=view.reason,
        )

    def _inspect(self, ref: str) -> dict[str, Any] | None:
        """A service by id or engine name, else by the engine name of a logical container name."""
        if _SWARM_ID.fullmatch(ref):
            order: tuple[str, ...] = (ref, service_name(ref))
        elif _ENGINE_NAME.search(ref):
            order = (service_name(ref), ref)
        else:
            order = (service_name(ref),)  # a logical name that is no engine name: one call, not two
        for candidate in dict.fromkeys(order):
            self._count("inspect")
            try:
                return self.client.api.inspect_service(candidate)
            except NotFound:
                continue
        return None

    def _get(self, ref: str) -> ContainerInfo | None:
        svc = self._inspect(ref)
        if svc is None:
            return None
        return self._info(svc, self._tasks({"service": svc["ID"]}))

    async def get(self, name: str) -> ContainerInfo | None:
        return await self._call("service inspect", functools.partial(self._get, name))

    def _list(self, scope: str) -> list[ContainerInfo]:
        labels = [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"]
        services = self._services({"label": labels})
        by_service: dict[str, list[dict[str, Any]]] = {}
        for t in self._tasks({"label": labels}):
            by_service.setdefault(t["ServiceID"], []).append(t)
        return [self._info(s, by_service.get(s["ID"], [])) for s in services]

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        """Two list calls per pass (services, tasks), both filtered by the manager on our labels."""
        return await self._call("service list", functools.partial(self._list, scope))

    # ---- changing -----------------------------------------------------------------------------

    def _scale(self, ref: str, replicas: int) -> str | None:
        for _ in range(3):  # "update out of sequence" when someone else updated in between: re-read, retry
            svc = self._inspect(ref)
            if svc is None:
                return None
            if ((svc["Spec"].get("Mode") or {}).get("Replicated") or {}).get("Replicas") == replicas:
                return svc["ID"]
            try:
                self._count("update")
                self.client.api.update_service(
                    svc["ID"], svc["Version"]["Index"], mode={"Replicated": {"Replicas": replicas}}, fetch_current_spec=True
                )
                return svc["ID"]
            except NotFound:
                return None
            except APIError as exc:
                if "out of sequence" not in str(exc.explanation or exc):
                    raise
        raise DependencyUnavailable(f"service {ref} kept changing while scaling it to {replicas}")

    async def start(self, name: str) -> None:
        """A service runs by itself; start only undoes a stop (replicas back to 1)."""
        await self._call("service scale", functools.partial(self._scale, name, 1))

    async def stop(self, name: str, *, timeout_s: int) -> None:
        """Scale to 0 and wait (bounded) until its task is no longer running: the agent leaves gracefully."""
        service_id = await self._call("service scale", functools.partial(self._scale, name, 0))
        if service_id is None:
            return
        deadline = time.monotonic() + timeout_s + 5
        while time.monotonic() < deadline:
            # Not filtered on desired state: scaling to 0 sets it to shutdown at once, long before the agent has left.
            tasks = await self._call("task list", functools.partial(self._tasks, {"service": service_id}))
            running = [t for t in tasks if (t.get("Status") or {}).get("State") in ("running", "starting")]
            if not running:
                return
            await asyncio.sleep(0.2)

    async def remove(self, name: str) -> None:
        """The service, then its secrets (a secret in use by a service cannot go before it)."""

        def remove() -> None:
            svc = self._inspect(name)
            if svc is None:
                return
            try:
                self._count("remove")
                self.client.api.remove_service(svc["ID"])
            except NotFound:
                pass
            self._remove_secrets(svc["Spec"]["Name"])

        await self._call("service remove", remove)

    async def logs_tail(self, name: str, *, lines: int = 20) -> str:
        """The service's last lines, fetched by the manager from the task's node; empty if that node is gone."""

        def tail() -> str:
            svc = self._inspect(name)
            if svc is None:
                return ""
            try:
                chunks = self.client.api.service_logs(svc["ID"], stdout=True, stderr=True, tail=lines)
                return b"".join(chunks).decode(errors="replace")
            except (APIError, OSError):
                return ""

        try:
            with anyio.fail_after(5):  # a lost node must not stall a reconcile pass
                return await anyio.to_thread.run_sync(tail, abandon_on_cancel=True, limiter=self._limiter)
        except (TimeoutError, docker.errors.DockerException, OSError):
            return ""

    async def stats(self, name: str) -> dict[str, Any] | None:
        """Not available through a manager (stats live on each node's engine): the sampler shows none."""
        return None
