"""The Kubernetes runtime against a real kube-apiserver, scheduler and controller-manager with kwok nodes.

No container runs under kwok (no kubelet can run here: cgroup v1), so these tests cover the Kubernetes
objects and promises; the agent joining its LiveKit room is covered on Docker (tests/e2e).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import ContainerKey, ContainerStatus, Mode, TriggerOutcome
from orchestrator.rules.naming import Label, container_name
from orchestrator.rules.agent_rows import container_row
from orchestrator.services.reconciler import Reconciler
from orchestrator.runtime import WatchEvent
from orchestrator.runtime.factory import runtime_from_settings
from orchestrator.runtime.kubernetes.objects import pod_name
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID
from devtools.agent_room import eventually
from devtools.kube_cluster import NODES, KubeCluster

pytestmark = pytest.mark.kubernetes


def service(settings: Settings, runtime: KubernetesRuntime, livekit: LiveKitGateway) -> TriggerService:
    return TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime)


async def test_factory_picks_the_engine(kube_settings: Callable[..., Settings]) -> None:
    runtime = runtime_from_settings(kube_settings())
    assert isinstance(runtime, KubernetesRuntime) and runtime.engine == "kubernetes"
    assert runtime.namespace == f"agents-{kube_settings().scope}"
    await runtime.ping()
    await runtime.aclose()


async def test_trigger_creates_a_restricted_labelled_pod_that_runs_and_is_reused(
    kube_settings: Callable[..., Settings], kruntime: KubernetesRuntime, kube_cluster: KubeCluster
) -> None:
    settings = kube_settings()
    livekit = LiveKitGateway()
    svc = service(settings, kruntime, livekit)
    room = "Support Room #1"  # spaces and '#': no label value can carry it, an annotation keeps it exact
    try:
        first = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u1", room_name=room)
        assert first.outcome is TriggerOutcome.created
        key = ContainerKey(client_id=CLIENT_ID, agent_slug="farah", room=room)
        assert first.container.name == pod_name(container_name(key))

        running = await eventually(
            lambda: _running(kruntime, first.container.name), timeout=30, what="the pod Running on a kwok node"
        )
        assert running.node in NODES and running.id == first.container.id
        assert running.labels[Label.ROOM] == room and running.labels[Label.CLIENT_ID] == CLIENT_ID

        ns = kruntime.namespace
        pod = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{running.name}")
        labels = pod["metadata"]["labels"]
        assert labels[Label.MANAGED] == "true" and labels[Label.SCOPE] == settings.scope and labels[Label.AGENT_SLUG] == "farah"
        assert Label.ROOM not in labels and pod["metadata"]["annotations"][Label.ROOM] == room
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True  # admitted by a namespace enforcing `restricted`
        assert pod["spec"]["restartPolicy"] == "OnFailure"
        assert pod["spec"]["containers"][0]["resources"]["limits"] == {"cpu": "100m", "memory": "64Mi"}
        # The agent's LiveKit token lives in a Secret owned by the pod, never in the pod spec.
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        secret_name = env["LIVEKIT_TOKEN"]["valueFrom"]["secretKeyRef"]["name"]
        assert "value" not in env["LIVEKIT_TOKEN"] and first.user_token not in json.dumps(pod)
        secret = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/secrets/{secret_name}")
        assert secret["metadata"]["ownerReferences"][0]["uid"] == running.id

        again = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u2", room_name=room)
        assert again.outcome is TriggerOutcome.reused and again.container.id == running.id
        assert len(kube_cluster.pods(ns)) == 1

        row = container_row(running, now=running.created_at)  # type: ignore[arg-type]
        assert row["node"] in NODES and row["status"] == "running"
    finally:
        await livekit.aclose()


async def _running(runtime: KubernetesRuntime, name: str):  # type: ignore[no-untyped-def]
    info = await runtime.get(name)
    return info if info is not None and info.status is ContainerStatus.running else None


async def test_fifty_concurrent_triggers_through_two_orchestrators_make_one_pod(
    kube_settings: Callable[..., Settings], kube_cluster: KubeCluster
) -> None:
    settings = kube_settings()
    runtimes = [KubernetesRuntime.from_settings(settings) for _ in range(2)]  # two connections, two "processes"
    livekit = LiveKitGateway()
    services = [service(settings, r, livekit) for r in runtimes]
    try:
        results = await asyncio.gather(*(
            services[i % 2].trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice,
                                    user_id=f"u{i}", room_name="burst")
            for i in range(50)
        ))
        assert len({r.container.id for r in results}) == 1
        assert sum(r.outcome is TriggerOutcome.created for r in results) == 1
        assert len(kube_cluster.pods(runtimes[0].namespace)) == 1
    finally:
        await livekit.aclose()
        for r in runtimes:
            await r.aclose()


async def test_label_selector_lists_only_this_scope(
    kube_settings: Callable[..., Settings], kruntime: KubernetesRuntime, kube_cluster: KubeCluster
) -> None:
    ours, theirs = kube_settings(), kube_settings(scope=f"{kube_settings().scope}-b", kube_namespace=kruntime.namespace)
    other = KubernetesRuntime.from_settings(theirs)
    livekit = LiveKitGateway()
    try:
        await service(ours, kruntime, livekit).trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="r1")
        await service(theirs, other, livekit).trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="r2")
        mine = await kruntime.list_managed(scope=ours.scope)
        assert [c.labels[Label.ROOM] for c in mine] == ["r1"]
        assert [c.labels[Label.ROOM] for c in await other.list_managed(scope=theirs.scope)] == ["r2"]
        # What an operator types instead of `docker ps | grep agent_`:
        out = kube_cluster.kubectl("get", "pods", "-n", kruntime.namespace, "-l", "agent-orchestrator.managed=true", "-o", "name").stdout
        assert len(out.split()) == 2
    finally:
        await livekit.aclose()
        await other.aclose()


async def test_watch_relists_sees_a_pod_deleted_behind_our_back_and_recovers_from_410_gone(
    kube_settings: Callable[..., Settings], kruntime: KubernetesRuntime, kube_cluster: KubeCluster
) -> None:
    settings = kube_settings()
    events: asyncio.Queue[WatchEvent] = asyncio.Queue()

    async def consume(**kwargs: str) -> None:
        async for ev in kruntime.watch(scope=settings.scope, **kwargs):
            await events.put(ev)

    livekit = LiveKitGateway()
    task = asyncio.create_task(consume())
    try:
        first = await asyncio.wait_for(events.get(), 10)
        assert first.kind == "relist" and first.items == ()
        result = await service(settings, kruntime, livekit).trigger(
            client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="watched")
        added = await _next_event(events, lambda e: e.kind == "upsert" and e.info is not None and e.info.id == result.container.id)
        assert added.info is not None and added.info.labels[Label.ROOM] == "watched"
        await _next_event(events, lambda e: e.kind == "upsert" and e.info is not None and e.info.status is ContainerStatus.running)

        # Deleted behind our back (an operator's kubectl): the watch says so within a second.
        kube_cluster.api("DELETE", f"/api/v1/namespaces/{kruntime.namespace}/pods/{result.container.name}",
                         {"gracePeriodSeconds": 0}, gracePeriodSeconds=0)
        t0 = time.monotonic()
        gone = await _next_event(events, lambda e: e.kind == "delete", timeout=1.0)
        print(f"delete seen by the watch {1000 * (time.monotonic() - t0):.0f} ms after the API answered")
        assert gone.info is not None and gone.info.id == result.container.id
        assert added.seq is not None and gone.seq is not None and gone.seq > added.seq  # etcd revisions order events
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # The watch's first resourceVersion after etcd was compacted past it (the session cluster has no pod watch
    # cache, which would otherwise still serve it): 410 Gone, then a relist.
    await service(settings, kruntime, livekit).trigger(
        client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="after-gone")
    stale = first.resource_version
    assert stale is not None
    kube_cluster.compact_etcd()
    relists_before = kruntime.watch_relists
    task = asyncio.create_task(consume(resource_version=stale))
    try:
        broken = await asyncio.wait_for(events.get(), 10)
        assert broken.kind == "broken"  # 410 Gone: what the reader held may have missed events
        relist = await asyncio.wait_for(events.get(), 10)
        assert relist.kind == "relist" and kruntime.watch_relists == relists_before + 1
        assert [c.labels[Label.ROOM] for c in relist.items] == ["after-gone"]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await livekit.aclose()


async def _next_event(queue: asyncio.Queue[WatchEvent], match: Callable[[WatchEvent], bool], *, timeout: float = 15.0) -> WatchEvent:
    deadline = time.monotonic() + timeout
    while True:
        ev = await asyncio.wait_for(queue.get(), max(0.01, deadline - time.monotonic()))
        if match(ev):
            return ev


async def test_unschedulable_pod_shows_the_schedulers_reason(
    kube_settings: Callable[..., Settings], kruntime: KubernetesRuntime
) -> None:
    settings = kube_settings(agent_cpus=5000)  # more than any kwok node has
    livekit = LiveKitGateway()
    try:
        result = await service(settings, kruntime, livekit).trigger(
            client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="too-big")

        async def reason() -> str | None:
            info = await kruntime.get(result.container.name)
            return info.reason if info is not None and info.reason and info.reason.startswith("Unschedulable") else None

        why = await eventually(reason, timeout=30, what="the scheduler's Unschedulable reason")
        assert "Insufficient cpu" in why
        info = await kruntime.get(result.container.name)
        assert info is not None and info.status is ContainerStatus.created and info.node is None
        assert container_row(info, now=info.created_at)["reason"] == why  # type: ignore[arg-type]
        # A second trigger for the room is answered as the create was (the pod is the kubelet's to run), not held
        # until a start timeout that a pod nobody can schedule would only end with an error.
        again = await service(settings, kruntime, livekit).trigger(
            client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u2", room_name="too-big")
        assert again.outcome is TriggerOutcome.reused and again.container.status is ContainerStatus.created
        assert again.container.id == result.container.id
    finally:
        await livekit.aclose()


async def test_remove_deletes_at_once_and_only_the_observed_pod(
    kube_settings: Callable[..., Settings], kruntime: KubernetesRuntime, kube_cluster: KubeCluster
) -> None:
    settings = kube_settings()
    livekit = LiveKitGateway()
    svc = service(settings, kruntime, livekit)
    try:
        old = (await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="ids")).container
        await kruntime.remove(old.id)
        assert await kruntime.get(old.name) is None  # grace period 0: gone at once, not Terminating
        new = (await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="ids")).container
        assert new.name == old.name and new.id != old.id
        await kruntime.remove(old.id)  # the observed (old) pod is gone; the newer one of that name survives
        assert (await kruntime.get(new.name)) is not None
        await kruntime.remove(new.name)
        await kruntime.remove(new.name)  # idempotent
        assert kube_cluster.pods(kruntime.namespace) == []
    finally:
        await livekit.aclose()


async def test_reconcile_pass_over_100_pods_is_one_list_call(
    kube_settings: Callable[..., Settings], kruntime: KubernetesRuntime, kube_cluster: KubeCluster
) -> None:
    # No agent joins under kwok and no human is in these rooms: keep the startup and grace rules out of this pass.
    settings = kube_settings(agent_startup_timeout_s=0, grace_period_s=600, room_empty_timeout_s=600,
                             max_agents_total=1000, max_agents_per_client=1000)
    livekit = LiveKitGateway()
    svc = service(settings, kruntime, livekit)
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        async with sem:
            await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name=f"rc-{i}")

    try:
        await asyncio.gather(*(one(i) for i in range(100)))
        tenants = FileTenantStore(settings.tenants_file)
        reconciler = Reconciler(settings=settings, runtime=kruntime, tenants=tenants, livekit=livekit, launcher=svc)
        kruntime.calls.clear()
        t0 = time.perf_counter()
        report = await reconciler.run_once()
        took = time.perf_counter() - t0
        print(f"reconcile pass over 100 pods: {took * 1000:.0f} ms, API calls {kruntime.calls}")
        assert report.containers == 100 and report.results == []
        assert kruntime.calls == {"list": 1}

        # Rooms closed in LiveKit: the next pass removes exactly those pods.
        lk_creds = (await tenants.get_client(CLIENT_ID)).livekit
        for i in range(3):
            await livekit.delete_room(lk_creds, room=f"rc-{i}")
        report = await reconciler.run_once()
        assert len(report.results) == 3 and all(r.ok for r in report.results), report.to_dict()
        left = {c.labels[Label.ROOM] for c in await kruntime.list_managed(scope=settings.scope)}
        assert len(left) == 97 and not left & {"rc-0", "rc-1", "rc-2"}
    finally:
        await livekit.aclose()


async def test_the_app_on_kubernetes_triggers_and_shows_node_and_reason(
    kube_settings: Callable[..., Settings], kube_cluster: KubeCluster
) -> None:
    """The whole app (ORCH_RUNTIME=kubernetes through the factory, the watch-fed view, the admin API), in-process."""
    from tests.conftest import app_client

    settings = kube_settings()
    body = {"agent_slug": "farah", "mode": "voice", "room_name": "via-http", "user_id": "u", "client_id": CLIENT_ID}
    async with app_client(settings) as api:
        first = await api.post("/api/v1/trigger-agent", json=body)
        assert first.status_code == 201, first.text

        async def listed() -> dict | None:  # type: ignore[type-arg]
            rows = (await api.get("/api/v1/admin/containers")).json()["containers"]
            return rows[0] if rows and rows[0].get("node") in NODES and rows[0]["status"] == "running" else None

        row = await eventually(listed, timeout=30, what="the admin API listing the pod Running on a node")
        assert row["room"] == "via-http" and row["reason"] is None
        again = await api.post("/api/v1/trigger-agent", json=body)
        assert again.status_code == 200 and again.json()["status"] == "reused"
    assert len(kube_cluster.pods(f"agents-{settings.scope}")) == 1
