"""One reconcile pass over 10, 100, 500 managed tiny containers: time, Docker/LiveKit calls, and the server's RSS.

Three ways per size: listed (one list call, every room polled: no view), from the watch-fed view with every room
polled (rooms unknown), and from the view with every room kept by webhooks (no LiveKit call).

Docker calls are counted at the HTTP level (a response hook on docker-py's requests session), so
every request the runtime makes is seen, whichever method made it.
"""

from __future__ import annotations

import asyncio
import re
import statistics
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import docker
import httpx

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import Agent, Client, ContainerInfo, ContainerKey, ContainerStatus, Mode
from orchestrator.rules import room_metadata
from orchestrator.core.clock import utcnow
from orchestrator.composition import Orchestrator
from orchestrator.rules.naming import Label, container_labels, container_name, spec_hash
from orchestrator.services.reconciler import Reconciler
from orchestrator.rules.rooms import Room, RoomState
from orchestrator.runtime import WatchEvent
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.rules.view import AgentView

_API_VERSION = re.compile(r"^/v[\d.]+")


class CountingLiveKit(LiveKitGateway):
    """The real gateway, counting each room-service call by name."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: Counter[str] = Counter()

    async def _call(self, creds, what, fn):  # type: ignore[no-untyped-def]
        self.calls[what] += 1
        return await super()._call(creds, what, fn)


class DockerCallCounter:
    """Counts every HTTP request docker-py sends, as 'METHOD /path' without the API version."""

    def __init__(self, runtime: DockerRuntime) -> None:
        self.calls: Counter[str] = Counter()
        runtime.client.api.hooks["response"].append(self._hook)

    def _hook(self, response: Any, *args: Any, **kwargs: Any) -> None:
        path = _API_VERSION.sub("", httpx.URL(response.request.url).path)
        self.calls[f"{response.request.method} {re.sub(r'/containers/[^/]+/', '/containers/{id}/', path)}"] += 1


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    raise RuntimeError(f"no VmRSS for pid {pid}")


def create_managed(client: docker.DockerClient, *, keys: list[ContainerKey], agent: Agent, image: str, scope: str,
                   concurrency: int = 8) -> float:
    """Start one tiny container per key with the labels the orchestrator gives; returns seconds taken.

    `sleep` instead of the image's one-second loop, so 500 idle containers do not fork 500 times a second.
    """
    spec = spec_hash(agent, image=image, mode=Mode.voice)

    def one(key: ContainerKey) -> None:
        labels = container_labels(key, agent=agent, mode=Mode.voice, scope=scope, spec=spec, created_at=utcnow())
        host = client.api.create_host_config(mem_limit="16m", nano_cpus=50_000_000, pids_limit=8, network_mode="host")
        cid = client.api.create_container(image, command=["sleep", "1800"], name=container_name(key), labels=labels,
                                          host_config=host, detach=True)["Id"]
        client.api.start(cid)

    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(one, keys))
    return time.perf_counter() - t0


async def ensure_rooms(gateway: LiveKitGateway, client: Client, agent: Agent, keys: list[ContainerKey], settings: Settings) -> None:
    sem = asyncio.Semaphore(20)

    async def one(key: ContainerKey) -> None:
        async with sem:
            await gateway.ensure_room(client.livekit, room=key.room, metadata=room_metadata.for_new_room(agent=agent, client_id=client.id),
                                      empty_timeout_s=settings.room_empty_timeout_s,
                                      departure_timeout_s=settings.room_departure_timeout_s)

    await asyncio.gather(*(one(k) for k in keys))


async def measure(*, client: docker.DockerClient, settings: Settings, client_id: str, image: str, sizes: list[int],
                  passes: int, server_url: str, server_pid: int) -> dict[str, object]:
    """Grow the managed set to each size; per size: create time, `passes` timed passes, calls per pass, RSS."""
    runtime = DockerRuntime(pool_size=settings.docker_pool_size)
    counter = await asyncio.to_thread(DockerCallCounter, runtime)
    livekit = CountingLiveKit()
    engine = Orchestrator(settings.model_copy(update={"view_resync_s": 3600}), runtime=runtime, livekit=livekit)
    await engine.start(loops=False)  # the checks only: the pass is driven here, the watch below
    tenant = await engine.tenants.get_client(client_id)
    agent = await engine.tenants.get_agent(tenant, "farah")
    informer, reconciler = engine.informer, engine.reconciler
    watching = asyncio.create_task(informer.run_forever())
    rows: list[dict[str, object]] = []
    out: dict[str, object] = {"rss_idle_mb": rss_mb(server_pid)}

    async def timed(*, fresh: bool) -> dict[str, object]:
        """`passes` passes in one mode: median/max time, calls of the last pass."""
        times = []
        for _ in range(passes):
            counter.calls.clear()
            livekit.calls.clear()
            report = await reconciler.run_once(fresh=fresh)
            times.append(report.duration_s)
        return {"median_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
                "docker_calls": sum(counter.calls.values()), "livekit_calls": dict(livekit.calls),
                "observed": report.containers, "actions": len(report.results)}

    try:
        have = 0
        for n in sorted(sizes):
            keys = [ContainerKey(client_id=client_id, agent_slug="farah", room=f"rc-{i}") for i in range(have, n)]
            await ensure_rooms(livekit, tenant, agent, keys, settings)
            create_s = await asyncio.to_thread(create_managed, client, keys=keys, agent=agent, image=image, scope=settings.scope)
            have = n
            while len(informer.view.state.by_id) < n:  # the watch sees each start within milliseconds
                await asyncio.sleep(0.05)
            registry = reconciler.registry
            registry.webhooks_seen.clear()
            listed = await timed(fresh=True)  # the pass without the view: one list call, every room polled
            times, docker_calls, lk_calls, actions, seen = [], [], [], [], []
            for _ in range(passes):
                counter.calls.clear()
                livekit.calls.clear()
                report = await reconciler.run_once(fresh=False)
                times.append(report.duration_s)
                docker_calls.append(dict(counter.calls))
                lk_calls.append(dict(livekit.calls))
                actions.append(len(report.results))
                seen.append(report.containers)
            registry.webhooks_seen[client_id] = utcnow()  # as after the first verified webhook
            known = await timed(fresh=False)  # every room observed once and kept by webhooks: no LiveKit calls
            async with httpx.AsyncClient(timeout=120) as http:
                served = (await http.post(f"{server_url}/api/v1/admin/reconcile")).json()
            rows.append({
                "n": n, "observed": seen[-1], "created_in_s": round(create_s, 1),
                "containers_per_s": round(len(keys) / create_s, 1) if keys else None,
                "pass_median_ms": round(statistics.median(times) * 1000, 1), "pass_max_ms": round(max(times) * 1000, 1),
                "ms_per_container": round(statistics.median(times) * 1000 / n, 3),
                "docker_calls_per_pass": docker_calls[-1], "docker_calls_total": sum(docker_calls[-1].values()),
                "livekit_calls_per_pass": lk_calls[-1], "actions": max(actions),
                "server_pass_ms": round(served["duration_s"] * 1000, 1), "server_rss_mb": rss_mb(server_pid),
                "listed_rooms_unknown": listed, "view_rooms_known": known,
            })
        first, last = rows[0], rows[-1]
        out["growth"] = {
            "n_ratio": round(int(last["n"]) / int(first["n"]), 1),  # type: ignore[call-overload]
            "time_ratio": round(float(last["pass_median_ms"]) / float(first["pass_median_ms"]), 1),  # type: ignore[arg-type]
        }
    finally:
        watching.cancel()
        await engine.stop()  # closes the runtime, LiveKit session and tenant store it was given
    out["passes"] = rows
    out["rss_with_max_mb"] = rows[-1]["server_rss_mb"] if rows else None
    return out


class _NoEngine:
    """Stands where the engine would be in the simulated pass: any call would be a bug in the measurement."""

    def __getattr__(self, name: str) -> Any:
        raise AssertionError(f"the simulated pass called the engine ({name})")


async def simulated(*, settings: Settings, client_id: str, n: int, passes: int = 5) -> dict[str, object]:
    """One pass over `n` agents held in the view (a relist), every room active and kept by webhooks: what the
    planner + view cost per pass when the engine and LiveKit have nothing new to say."""
    now = utcnow()
    tenants = FileTenantStore(settings.tenants_file)
    tenant = await tenants.get_client(client_id)
    agent = await tenants.get_agent(tenant, "farah")
    spec = spec_hash(agent, image=settings.agent_image, mode=Mode.voice)
    items = []
    for i in range(n):
        key = ContainerKey(client_id=client_id, agent_slug="farah", room=f"sim-{i}")
        labels = container_labels(key, agent=agent, mode=Mode.voice, scope=settings.scope, spec=spec, created_at=now)
        items.append(ContainerInfo(id=f"sim{i:06d}", name=container_name(key), status=ContainerStatus.running, labels=labels))
    view = AgentView()
    view.apply(WatchEvent(kind="relist", items=tuple(items)), now=now)
    livekit = CountingLiveKit()
    reconciler = Reconciler(settings=settings, runtime=_NoEngine(), tenants=tenants, livekit=livekit,  # type: ignore[arg-type]
                            launcher=_NoEngine(), view=view)  # type: ignore[arg-type]
    registry = reconciler.registry
    registry.webhooks_seen[client_id] = now
    for c in items:
        room = c.labels[Label.ROOM]
        registry.rooms[(client_id, room)] = Room(
            client_id=client_id, name=room, state=RoomState.ACTIVE, humans=frozenset({"h"}),
            agents=frozenset({"agent-farah"}), observed_at=now, confirmed_at=now, metadata=room_metadata.for_new_room(agent=agent, client_id=client_id),
        )
    times = []
    for _ in range(passes):
        report = await reconciler.run_once(fresh=False)
        times.append(report.duration_s)
    assert report.containers == n and not report.results, report.to_dict()
    await livekit.aclose()
    return {"n": n, "median_ms": round(statistics.median(times) * 1000, 1), "max_ms": round(max(times) * 1000, 1),
            "livekit_calls": sum(livekit.calls.values())}
