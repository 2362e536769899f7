"""The swarm runtime on a real 3-node swarm: one service per key, the real agent in the real room,
no duplicates across two managers, capacity answers, the reconciler and the grace period."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import pytest
from livekit import rtc

from orchestrator.core.errors import LimitExceeded
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import ContainerKey, ContainerStatus, LiveKitCredentials, Mode, TriggerOutcome
from orchestrator.rules.naming import Label, agent_identity, container_name
from orchestrator.services.reconciler import Reconciler
from orchestrator.rules.rooms import AgentLaunched
from orchestrator.runtime.swarm.runtime import SwarmRuntime
from orchestrator.runtime.swarm.rules import service_name
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.core.clock import utcnow
from tests.conftest import CLIENT_ID
from devtools.agent_room import eventually
from devtools.swarm_cluster import SwarmCluster
from tests.swarm.conftest import AGENT_IMAGE
from tests.swarm.helpers import AGENT_KIND, identities, node_names, running_tasks, services

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def test_trigger_runs_one_service_whose_agent_joins_the_room_then_reuses_it(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], livekit_gateway: LiveKitGateway, sw_creds: LiveKitCredentials, scope: str,
) -> None:
    settings = sw_settings(agent_image=AGENT_IMAGE, agent_memory="256m", agent_cpus=0.1, agent_stop_timeout_s=10)
    svc = trigger_service(settings, runtimes(0))
    room = f"{scope}-call"
    first = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="alice", room_name=room)  # type: ignore[attr-defined]
    assert first.outcome is TriggerOutcome.created
    assert first.container.status is ContainerStatus.running
    key = ContainerKey(client_id=CLIENT_ID, agent_slug="farah", room=room)
    assert first.container.name == service_name(container_name(key))
    assert first.container.node in node_names(swarm).values()

    found = services(swarm, scope)
    assert [s["ID"] for s in found] == [first.container.id]
    spec = found[0]["Spec"]
    for labels in (spec["Labels"], spec["TaskTemplate"]["ContainerSpec"]["Labels"]):
        assert labels[Label.ROOM] == room and labels[Label.CLIENT_ID] == CLIENT_ID and labels[Label.SCOPE] == scope
        assert not any(v.count(".") == 2 and len(v) > 100 for v in labels.values()), "a token in a label"
    assert spec["TaskTemplate"]["RestartPolicy"]["Condition"] == "on-failure"
    assert spec["TaskTemplate"]["Resources"]["Limits"]["Pids"] == settings.agent_pids
    async def agent_in_room() -> bool:
        return (agent_identity("farah"), AGENT_KIND) in await identities(livekit_gateway, sw_creds, room)

    await eventually(agent_in_room, timeout=30, what="the agent from a swarm task in ListParticipants")

    async def healthy_task() -> bool:  # swarm says `running` once the image's HEALTHCHECK passed
        return len(await asyncio.to_thread(running_tasks, swarm, first.container.id)) == 1

    await eventually(healthy_task, timeout=30, what="one task running (healthy) for the service")
    assert len(services(swarm, scope)) == 1

    again = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="bob", room_name=room)  # type: ignore[attr-defined]
    assert again.outcome is TriggerOutcome.reused and again.container.id == first.container.id
    assert len(services(swarm, scope)) == 1


async def test_fifty_concurrent_triggers_through_two_managers_make_one_service(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], scope: str,
) -> None:
    settings = sw_settings()
    a, b = trigger_service(settings, runtimes(0)), trigger_service(settings, runtimes(1))
    room = f"{scope}-race"

    async def one(i: int) -> object:
        svc = a if i % 2 else b
        return await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id=f"u{i}", room_name=room)  # type: ignore[attr-defined]

    results = await asyncio.gather(*(one(i) for i in range(50)))
    found = services(swarm, scope)
    assert len(found) == 1, [s["Spec"]["Name"] for s in found]
    assert {r.container.id for r in results} == {found[0]["ID"]}  # type: ignore[attr-defined]
    assert sum(r.outcome is TriggerOutcome.created for r in results) == 1  # type: ignore[attr-defined]
    assert all(r.container.status is ContainerStatus.running for r in results)  # type: ignore[attr-defined]


async def test_a_full_swarm_answers_429_naming_why_and_leaves_no_service(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], scope: str,
) -> None:
    settings = sw_settings(agent_cpus=3.0)  # every node has 2 CPUs: a 3-CPU reservation fits nowhere
    svc = trigger_service(settings, runtimes(0))
    with pytest.raises(LimitExceeded) as caught:
        await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name=f"{scope}-big")  # type: ignore[attr-defined]
    assert "insufficient resources" in caught.value.message and caught.value.status_code == 429
    assert services(swarm, scope) == []


async def test_placement_constraint_per_client_that_no_node_meets_is_a_clear_503(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], scope: str,
) -> None:
    settings = sw_settings(swarm_placement={CLIENT_ID: ["node.labels.tenant==nobody"]})
    svc = trigger_service(settings, runtimes(0, placement=settings.swarm_placement))
    with pytest.raises(Exception) as caught:
        await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name=f"{scope}-pl")  # type: ignore[attr-defined]
    assert getattr(caught.value, "status_code", None) == 503 and "placement" in caught.value.message  # type: ignore[attr-defined]
    assert services(swarm, scope) == []


async def test_list_is_two_calls_and_watch_relists_then_follows(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], scope: str,
) -> None:
    settings = sw_settings()
    rt = runtimes(0, poll_s=0.5)
    svc = trigger_service(settings, rt)
    first = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name=f"{scope}-w1")  # type: ignore[attr-defined]
    rt.calls.clear()
    listed = await rt.list_managed(scope=scope)
    assert [c.id for c in listed] == [first.container.id] and listed[0].node
    assert rt.calls == {"services": 1, "tasks": 1}

    stream = rt.watch(scope=scope)
    event = await asyncio.wait_for(stream.__anext__(), timeout=10)
    assert event.kind == "relist" and [i.id for i in event.items] == [first.container.id]
    second = await svc.trigger(client_id=CLIENT_ID, agent_slug="litebridge", mode=Mode.voice, user_id="u", room_name=f"{scope}-w1")  # type: ignore[attr-defined]

    async def upsert_of(service_id: str, status: ContainerStatus) -> None:
        while True:
            ev = await asyncio.wait_for(stream.__anext__(), timeout=10)
            if ev.kind == "upsert" and ev.info and ev.info.id == service_id and ev.info.status is status:
                return

    await upsert_of(second.container.id, ContainerStatus.running)
    await rt.remove(second.container.id)
    while True:
        ev = await asyncio.wait_for(stream.__anext__(), timeout=10)
        if ev.kind == "delete" and ev.info and ev.info.id == second.container.id:
            break
    await stream.aclose()


async def test_reconciler_removes_duplicate_and_stale_services(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], livekit_gateway: LiveKitGateway, scope: str,
) -> None:
    settings = sw_settings(agent_startup_timeout_s=0)
    rt = runtimes(0)
    svc = trigger_service(settings, rt)
    room = f"{scope}-dup"
    kept = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name=room)  # type: ignore[attr-defined]
    tenants = FileTenantStore(settings.tenants_file)
    client = await tenants.get_client(CLIENT_ID)
    agent = await tenants.get_agent(client, "farah")
    # A second service claiming the same key under another name (a manual copy, an older naming), older.
    key = ContainerKey(client_id=CLIENT_ID, agent_slug="farah", room=room)
    network = await svc.networks.for_client(CLIENT_ID)  # type: ignore[attr-defined]
    spec = svc.spec_for(key, name=container_name(key) + "-copy", client=client, agent=agent, mode=Mode.voice, network=network)  # type: ignore[attr-defined]
    dup = await rt.create_and_start(spec.model_copy(update={"labels": {**spec.labels, Label.CREATED_AT: "2020-01-01T00:00:00+00:00"}}))
    # A stale one: its room is gone from LiveKit.
    stale = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name=f"{scope}-gone")  # type: ignore[attr-defined]
    await livekit_gateway.delete_room(client.livekit, room=f"{scope}-gone")
    assert len(services(swarm, scope)) == 3

    rec = Reconciler(settings=settings, runtime=rt, tenants=tenants, livekit=livekit_gateway, launcher=svc)  # type: ignore[arg-type]
    report = await rec.run_once()
    removed = {r.action.container_id for r in report.results if r.action.kind == "RemoveContainer" and r.ok}  # type: ignore[attr-defined]
    assert removed == {dup.id, stale.container.id}, json.dumps(report.to_dict(), default=str)
    assert [s["ID"] for s in services(swarm, scope)] == [kept.container.id]


async def test_grace_period_then_the_service_and_room_go(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], runtimes: Callable[..., SwarmRuntime],
    trigger_service: Callable[..., object], livekit_gateway: LiveKitGateway, sw_creds: LiveKitCredentials, scope: str,
) -> None:
    grace = 4.0
    settings = sw_settings(agent_image=AGENT_IMAGE, agent_memory="256m", agent_cpus=0.1, agent_stop_timeout_s=10,
                           grace_period_s=grace, agent_startup_timeout_s=30)
    rt = runtimes(0)
    tenants = FileTenantStore(settings.tenants_file)
    rec: Reconciler | None = None

    def launched(key: ContainerKey) -> None:
        assert rec is not None
        rec.registry.apply(key.client_id, key.room, AgentLaunched(), now=utcnow())

    svc = trigger_service(settings, rt, on_launched=launched)
    rec = Reconciler(settings=settings, runtime=rt, tenants=tenants, livekit=livekit_gateway, launcher=svc)  # type: ignore[arg-type]
    room = f"{scope}-grace"
    out = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="alice", room_name=room)  # type: ignore[attr-defined]
    human = rtc.Room()
    await asyncio.wait_for(human.connect(sw_creds.url, out.user_token), timeout=15)
    try:
        async def active() -> bool:
            await rec.run_once()
            r = rec.registry.rooms.get((CLIENT_ID, room))
            return r is not None and r.state.value == "active" and agent_identity("farah") in r.agents

        await eventually(active, timeout=30, what="room active with the agent in it", interval=0.3)
    finally:
        await human.disconnect()
    left_at = time.monotonic()

    async def gone() -> bool:
        await rec.run_once()
        if services(swarm, scope):
            assert time.monotonic() - left_at < grace + 20
            return False
        return True

    async def in_grace() -> bool:
        await rec.run_once()
        r = rec.registry.rooms.get((CLIENT_ID, room))
        return r is not None and r.state.value == "grace_period"

    await eventually(in_grace, timeout=10, what="grace period after the human left", interval=0.2)
    assert services(swarm, scope), "the service went before the grace period ended"
    await eventually(gone, timeout=grace + 25, what="service removed after the grace period", interval=0.3)
    assert time.monotonic() - left_at >= grace
    assert await livekit_gateway.list_rooms(sw_creds, names=[room]) == []


async def test_the_app_on_swarm_triggers_and_shows_the_node(
    swarm: SwarmCluster, sw_settings: Callable[..., Settings], scope: str,
) -> None:
    """ORCH_RUNTIME=swarm through the app factory: the watch-fed view, the trigger API, the admin list with nodes."""
    from tests.conftest import app_client

    settings = sw_settings(usage_sampling_enabled=False)
    async with app_client(settings) as api:
        r = await api.post("/api/v1/trigger-agent", json={
            "agent_slug": "farah", "room_name": f"{scope}-app", "user_id": "alice", "client_id": CLIENT_ID, "mode": "voice"})
        assert r.status_code == 201, r.text
        assert len(services(swarm, scope)) == 1

        async def listed() -> list[dict] | None:
            rows = (await api.get("/api/v1/admin/containers")).json()["containers"]
            return rows if rows and rows[0].get("node") else None

        rows = await eventually(listed, timeout=15, what="the agent with its node in the admin list")
        assert rows[0]["node"] in node_names(swarm).values() and rows[0]["status"] == "running"
        again = await api.post("/api/v1/trigger-agent", json={
            "agent_slug": "farah", "room_name": f"{scope}-app", "user_id": "bob", "client_id": CLIENT_ID, "mode": "voice"})
        assert again.status_code == 200 and len(services(swarm, scope)) == 1
