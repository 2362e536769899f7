"""The Docker Swarm implementation of ContainerRuntime: one replicated service (replicas 1) per key.

It talks to one swarm manager through the docker SDK, off the event loop, with the Docker runtime's
call helper (retries of transient daemon errors, errors mapped to ours). The service name is the
cross-host lock: a create that loses answers 409 or 500 "conflicts with an existing object", both
turned into NameTaken *before* any retry. The rules (names, spec, states) live in swarm_rules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import anyio
import docker
from docker.errors import APIError, NotFound

from orchestrator.core.clock import parse_engine_time
from orchestrator.core.errors import ContainerFailed, DependencyUnavailable, LimitExceeded, OrchestratorError
from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules.naming import Label
from orchestrator.settings import Settings
from orchestrator.runtime import ContainerSpec, NameTaken, WatchEvent
from orchestrator.core.retry import Backoff
from orchestrator.runtime.dockerapi import DockerAPI
from orchestrator.runtime.swarm.rules import (
    constraints_for,
    current_task,
    service_name,
    service_spec,
    task_status,
    unschedulable,
)

log = logging.getLogger(__name__)
_SWARM_ID = re.compile(r"^[a-z0-9]{25}$")  # service names always hold `_` or `-`, so never look like this
_ENGINE_NAME = re.compile(r"-[0-9a-f]{8}$")  # how every service name made by service_name() ends


def _name_conflict(exc: APIError) -> bool:
    return exc.status_code == 409 or (
        exc.status_code == 500 and "conflicts with an existing object" in str(exc.explanation or exc)
    )


class SwarmRuntime(DockerAPI):
    """ContainerRuntime on a swarm manager: services are the objects, their newest task is the state."""

    engine = "swarm"
    # Not a NetworkProvider (it has no ensure_network): a bridge network made on one node cannot carry services, so
    # agents keep the host's network unless the operator names an overlay of their own (services.agent_networks).

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

    # ---- creating -----------------------------------------------------------------------------

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
        """Create the service, then wait for its task to run; a task that cannot run is removed with its service."""
        body = service_spec(
            name=service_name(spec.name), image=spec.image, labels=spec.labels, env=spec.env, memory=spec.memory,
            cpus=spec.cpus, pids=spec.pids, network=spec.network, restart_policy=spec.restart_policy,
            restart_max=spec.restart_max, restart_delay_s=self._restart_delay_s, stop_timeout_s=spec.stop_timeout_s,
            constraints=constraints_for(spec.labels, self._placement), spread=self._spread,
        )
        service_id = await self._call("service create", functools.partial(self._create, body))
        try:
            return await self._wait_started(service_id, body=body, image=spec.image)
        except BaseException:
            with anyio.CancelScope(shield=True):
                await self.remove(service_id)
            raise

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
                raise ContainerFailed(
                    f"service {info.name} not running after {self._start_timeout_s:g} s (task: {reason or status.value})"
                )
            await asyncio.sleep(0.03 if time.monotonic() - started < 3 else 0.25)

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
        def remove() -> None:
            svc = self._inspect(name)
            if svc is None:
                return
            try:
                self._count("remove")
                self.client.api.remove_service(svc["ID"])
            except NotFound:
                pass

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

    # ---- following --------------------------------------------------------------------------

    async def watch(self, *, scope: str) -> AsyncIterator[WatchEvent]:
        """A relist, then upserts/deletes from diffing the two list calls every `poll_s` (and right after a
        service or container event from the manager). Task changes on other nodes raise no manager event,
        hence the poll. A failed list yields `broken`, and the next successful one a fresh `relist`.
        Events come from one loop in order, so `seq` is left unset."""
        known: dict[str, ContainerInfo] | None = None
        backoff = Backoff(first_s=0.5)
        wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        stop_events = self._follow_service_events(scope, lambda: loop.call_soon_threadsafe(wake.set))
        try:
            while True:
                try:
                    items = await self.list_managed(scope=scope)
                except OrchestratorError as exc:
                    delay = backoff.next()
                    log.warning("swarm watch: list failed (%s); relisting after %.1fs", exc.message, delay)
                    if known is not None:
                        yield WatchEvent(kind="broken")  # stop trusting the view until the relist below
                    known = None
                    await asyncio.sleep(delay)
                    continue
                backoff.reset()
                now = {i.id: i for i in items}
                if known is None:
                    yield WatchEvent(kind="relist", items=tuple(items))
                else:
                    for sid, info in now.items():
                        if known.get(sid) != info:
                            yield WatchEvent(kind="upsert", info=info)
                    for sid, info in known.items():
                        if sid not in now:
                            yield WatchEvent(kind="delete", info=info)
                known = now
                wake.clear()
                try:
                    await asyncio.wait_for(wake.wait(), timeout=self._poll_s)
                except asyncio.TimeoutError:
                    pass
        finally:
            stop_events()

    def _follow_service_events(self, scope: str, poke: Callable[[], None]) -> Callable[[], None]:
        """A thread on its own client reading the manager's service events (create/update/remove) of our scope."""
        stopped = threading.Event()
        current: list[Any] = []
        filters = {"type": ["service", "container"], "label": [f"{Label.MANAGED}=true", f"{Label.SCOPE}={scope}"]}

        def follow() -> None:
            while not stopped.is_set():
                client = None
                try:
                    client = self.new_client()
                    stream = client.api.events(decode=True, filters=filters)
                    current[:] = [stream]
                    poke()  # (re)connected: whatever happened meanwhile is picked up by a list now
                    for _ in stream:
                        poke()
                except Exception as exc:
                    if not stopped.is_set():
                        log.warning("swarm event stream broke (%s); reconnecting", type(exc).__name__)
                        stopped.wait(1.0)
                finally:
                    if client is not None:
                        client.close()

        def stop() -> None:
            stopped.set()
            for stream in current:
                try:
                    stream.close()
                except Exception:
                    pass

        threading.Thread(target=follow, name=f"swarm-events-{scope}", daemon=True).start()
        return stop
