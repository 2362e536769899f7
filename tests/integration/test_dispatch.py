"""LiveKit dispatch end to end: a real livekit-server dispatches jobs, the real engine runs the real agent image.

Every way LiveKit dispatches (AgentDispatchService, a token's room configuration, automatic dispatch of a new
room) becomes the trigger's reuse-or-launch: one container per (client, agent, room), joined with the job's token.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from livekit import api

from orchestrator.core.models import Agent, Client
from orchestrator.rules import ownership
from orchestrator.rules.naming import Label
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client
from devtools.agent_room import CHAT_TOPIC, Participant, eventually
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(180)]

AGENT_IMAGE = "agent-orchestrator/agent:latest"
CLARENCE = {"id": "3f0c2a9e-7b1d-4c55-9d0e-1a2b3c4d5e6f", "slug": "clarence-coherence", "name": "Clarence Coherence",
            "greeting": "Hello, I'm Clarence."}
FARAH = {"id": "8a1d5f3c-2e4b-4f6a-8c7d-9e0f1a2b3c4d", "slug": "farah", "name": "Farah", "greeting": "Hi, Farah here."}


@pytest.fixture(scope="module")
def lk(agent_network: Any) -> Iterator[LiveKitServer]:
    """This module's own server: registrations and automatic dispatch must not meet other modules' rooms.
    Bound on the agents' network gateway too, so the agent containers reach it."""
    server = LiveKitServer(api_key="dispatchkey", api_secret=secrets.token_hex(32), port=free_port(),
                           agent_gateway=agent_network.gateway).start()
    yield server
    server.stop()


def tenants(path: Path, lk: LiveKitServer, *, other_client: bool = False, agents: list[dict[str, str]] | None = None) -> Path:
    creds = {"url": lk.url, "api_key": lk.api_key, "api_secret": lk.api_secret}
    clients: list[dict[str, Any]] = [{"id": CLIENT_ID, "name": "Autonomite", "livekit": creds, "agents": agents or [CLARENCE, FARAH]}]
    if other_client:  # a second tenant on the same LiveKit server, without clarence
        clients.append({"id": OTHER_CLIENT_ID, "name": "Acme", "livekit": creds,
                        "agents": [{"id": "acme-litebridge", "slug": "litebridge", "name": "Acme Litebridge"}]})
    path.write_text(yaml.safe_dump({"clients": clients}))
    return path


@pytest.fixture
def settings_for(scope: str, tmp_path: Path, lk: LiveKitServer, docker_client: docker.DockerClient) -> Callable[..., Settings]:
    docker_client.images.get(AGENT_IMAGE)  # built by scripts/build-images; missing is a failure, not a skip

    def make(*, other_client: bool = False, **overrides: Any) -> Settings:
        base: dict[str, Any] = {
            "scope": scope, "tenants_file": tenants(tmp_path / "tenants.yaml", lk, other_client=other_client),
            "agent_image": AGENT_IMAGE, "agent_memory": "256m", "agent_cpus": 0.5, "agent_stop_timeout_s": 10,
            "reconcile_enabled": False, "dispatch_enabled": True, "dispatch_status_interval_s": 0.5,
        }
        return Settings(**{**base, **overrides})

    return make


@asynccontextmanager
async def lkapi(lk: LiveKitServer) -> AsyncIterator[api.LiveKitAPI]:
    client = api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret)
    try:
        yield client
    finally:
        await client.aclose()


async def registered(orch: httpx.AsyncClient, *, count: int) -> list[dict[str, Any]]:
    async def probe() -> list[dict[str, Any]] | None:
        rows = (await orch.get("/api/v1/admin/dispatch")).json()["registrations"]
        return rows if len(rows) == count and all(r["state"] == "registered" for r in rows) else None

    return await eventually(probe, timeout=15, what=f"{count} registrations with LiveKit")


async def agents_in(lk: LiveKitServer, room: str) -> dict[str, api.ParticipantInfo]:
    async with lkapi(lk) as client:
        try:
            resp = await client.room.list_participants(api.ListParticipantsRequest(room=room))
        except api.TwirpError:
            return {}
    return {p.identity: p for p in resp.participants if p.kind == api.ParticipantInfo.Kind.AGENT}


async def agent_listed(lk: LiveKitServer, room: str, identity: str, *, timeout: float = 30) -> api.ParticipantInfo:
    """Listed and ACTIVE (connected): LiveKit lists a participant already while its connection is being set up."""
    async def probe() -> api.ParticipantInfo | None:
        p = (await agents_in(lk, room)).get(identity)
        return p if p is not None and p.state == api.ParticipantInfo.State.ACTIVE else None

    return await eventually(probe, timeout=timeout, what=f"{identity} connected in {room}", interval=0.2)


def containers(docker_client: docker.DockerClient, scope: str, **labels: str) -> list[dict[str, Any]]:
    filters = [f"{Label.SCOPE}={scope}", *(f"{getattr(Label, k.upper())}={v}" for k, v in labels.items())]
    return docker_client.api.containers(all=True, filters={"label": filters})


def human_token(lk: LiveKitServer, room: str, identity: str = "human", *, config: api.RoomConfiguration | None = None) -> str:
    token = api.AccessToken(lk.api_key, lk.api_secret).with_identity(identity).with_grants(api.VideoGrants(room_join=True, room=room))
    if config is not None:
        token = token.with_room_config(config)
    return token.to_jwt()


async def feed(orch: httpx.AsyncClient) -> list[dict[str, Any]]:
    return (await orch.get("/api/v1/admin/events")).json()["events"]


async def rejected(orch: httpx.AsyncClient, room: str, reason: str) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        return next((e for e in await feed(orch) if e.get("room") == room and e.get("reason") == reason), None)

    return await eventually(probe, timeout=15, what=f"a '{reason}' rejection for {room} in the event feed")


async def test_create_dispatch_runs_one_container_and_twice_still_one(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    room = f"{scope}-explicit"
    async with app_client(settings_for()) as orch, lkapi(lk) as lkc:
        await registered(orch, count=2)
        meta = json.dumps({"client_id": CLIENT_ID})
        first = await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="clarence-coherence", room=room, metadata=meta))
        me = await agent_listed(lk, room, "agent-clarence-coherence")
        assert me.name == "Clarence Coherence"
        assert me.attributes.get("lk.agent_name") == "clarence-coherence"  # joined with the token LiveKit minted for the job

        listed = [d for d in await lkc.agent_dispatch.list_dispatch(room) if d.agent_name]  # "": LiveKit's automatic one
        assert [d.id for d in listed] == [first.id]
        (row,) = containers(docker_client, scope, room=room)
        assert row["Labels"][Label.DISPATCH_ID] == first.id and row["Labels"][Label.JOB_ID].startswith("AJ_")

        second = await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="clarence-coherence", room=room, metadata=meta))

        async def served() -> dict[str, Any] | None:
            return next((e for e in await feed(orch) if e.get("room") == room and e.get("dispatch_id") == second.id
                         and "already runs" in e["message"]), None)

        await eventually(served, timeout=15, what="the second dispatch's job answered as already served")
        assert [c["Id"] for c in containers(docker_client, scope, room=room)] == [row["Id"]], "a second container for one key"
        assert {d.id for d in await lkc.agent_dispatch.list_dispatch(room) if d.agent_name} == {first.id, second.id}
        jobs = [j for j in (await orch.get("/api/v1/admin/dispatch")).json()["jobs"] if j["room"] == room]
        assert [(j["dispatch_id"], j["status"]) for j in jobs] == [(first.id, "running")]

        # Operators see the job: admin containers (what `orchestrator ps` shows), metrics, the event feed.
        shown = (await orch.get("/api/v1/admin/containers")).json()["containers"]
        assert [c["job"] for c in shown if c["room"] == room] == [row["Labels"][Label.JOB_ID]]
        metrics = (await orch.get("/metrics")).text
        assert 'orchestrator_dispatch_jobs_total{outcome="accepted"} 1.0' in metrics
        assert 'orchestrator_dispatch_jobs_total{outcome="served"} 1.0' in metrics
        assert "orchestrator_dispatch_join_seconds_count 1.0" in metrics
        assert any("agent in" in e["message"] and e.get("room") == room for e in await feed(orch))

        # Deleting the dispatch whose job runs the agent stops it (SIGTERM: it leaves, exit 0).
        await lkc.agent_dispatch.delete_dispatch(first.id, room)

        async def stopped() -> bool:
            (c,) = containers(docker_client, scope, room=room)
            return c["State"] == "exited" and "Exited (0)" in c["Status"]

        await eventually(stopped, timeout=20, what="the agent container stopped after its dispatches were deleted", interval=0.3)
        assert "agent-clarence-coherence" not in await agents_in(lk, room)


async def test_a_launch_that_fails_reports_the_job_failed_with_the_reason_to_livekit(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, tmp_path: Path, docker_client: docker.DockerClient
) -> None:
    room = f"{scope}-noimage"
    broken = {**FARAH, "image": "agent-orchestrator/does-not-exist:0"}
    settings = settings_for(tenants_file=tenants(tmp_path / "broken.yaml", lk, agents=[broken]))
    async with app_client(settings) as orch, lkapi(lk) as lkc:
        await registered(orch, count=1)
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=room))

        async def job_failed_in_livekit() -> str | None:
            return next((line for line in lk.log_tail(1_000_000).splitlines()
                         if "job ended" in line and "JS_FAILED" in line and "does-not-exist" in line), None)

        line = await eventually(job_failed_in_livekit, timeout=20, what="LiveKit logging the job ended JS_FAILED with our reason")
        assert "image" in line
        assert containers(docker_client, scope, room=room) == []
        assert 'orchestrator_dispatch_jobs_total{outcome="failed"} 1.0' in (await orch.get("/metrics")).text


async def test_room_closed_the_agent_leaves_and_its_job_ends(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    room = f"{scope}-closed"
    async with app_client(settings_for()) as orch, lkapi(lk) as lkc:
        await registered(orch, count=2)
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=room))
        await agent_listed(lk, room, "agent-farah")
        await lkc.room.delete_room(api.DeleteRoomRequest(room=room))

        async def ended() -> bool:
            jobs = [j for j in (await orch.get("/api/v1/admin/dispatch")).json()["jobs"] if j["room"] == room]
            (c,) = containers(docker_client, scope, room=room)
            return not jobs and c["State"] == "exited" and "Exited (0)" in c["Status"]

        await eventually(ended, timeout=20, what="the agent gone with its room (exit 0) and its job ended", interval=0.3)
        assert any(e.get("room") == room and " ended" in e["message"] for e in await feed(orch))


async def test_token_room_configuration_brings_the_agent_without_our_api(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    room = f"{scope}-token"
    config = api.RoomConfiguration(agents=[api.RoomAgentDispatch(agent_name="farah", metadata=json.dumps({"client_id": CLIENT_ID, "mode": "text"}))])
    async with app_client(settings_for()) as orch:
        await registered(orch, count=2)
        async with Participant(lk.url, human_token(lk, room, config=config)) as human:
            greeting = await human.next_text(sender="agent-farah", timeout=30)
            assert greeting.text == "Hi, Farah here."
        assert len(containers(docker_client, scope, room=room)) == 1


async def test_automatic_dispatch_takes_pattern_rooms_only(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    matching, outside = f"agent-{FARAH['id']}-{scope[-8:]}", f"{scope}-plain"
    async with app_client(settings_for(dispatch_automatic=True)) as orch, lkapi(lk) as lkc:
        await registered(orch, count=3)
        await lkc.room.create_room(api.CreateRoomRequest(name=matching))  # a plain CreateRoom, as a frontend or SIP would
        async with Participant(lk.url, human_token(lk, matching)):
            await agent_listed(lk, matching, "agent-farah")
        assert len(containers(docker_client, scope, room=matching)) == 1

        await lkc.room.create_room(api.CreateRoomRequest(name=outside, metadata=json.dumps({"agent_id": FARAH["id"]})))
        async with Participant(lk.url, human_token(lk, outside)):
            event = await rejected(orch, outside, "no_pattern")
            assert "matches none" in event["message"]
        assert containers(docker_client, scope, room=outside) == []


async def test_two_agents_dispatched_into_one_room_both_answer(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    room = f"{scope}-duo"
    meta = json.dumps({"client_id": CLIENT_ID, "mode": "text"})
    async with app_client(settings_for()) as orch, lkapi(lk) as lkc:
        await registered(orch, count=2)
        for slug in ("clarence-coherence", "farah"):
            await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name=slug, room=room, metadata=meta))
        await agent_listed(lk, room, "agent-clarence-coherence")
        await agent_listed(lk, room, "agent-farah")
        assert sorted(c["Labels"][Label.AGENT_SLUG] for c in containers(docker_client, scope, room=room)) == ["clarence-coherence", "farah"]

        async with Participant(lk.url, human_token(lk, room)) as human:
            await human.room.local_participant.send_text("roll call", topic=CHAT_TOPIC)
            answers: dict[str, str] = {}
            while len(answers) < 2:
                msg = await human.next_text(timeout=15)
                if "roll call" in msg.text:
                    answers[msg.sender] = msg.text
        assert set(answers) == {"agent-clarence-coherence", "agent-farah"}


async def test_unknown_or_other_tenants_agent_is_rejected_and_nothing_is_created(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    theirs, forged, unknown_room = f"{scope}-acme", f"{scope}-forged", f"agent-no-such-agent-{scope[-8:]}"
    key = "dispatch-test-ownership-key-7c1e9f0b42d6"

    def stamped(room: str, client_id: str) -> str:
        """Room metadata as the orchestrator's trigger writes it: the client's claim, proven by a signed stamp."""
        sig = ownership.stamp(key.encode(), client_id=client_id, room=room, created_at=datetime.now(timezone.utc))
        return json.dumps({"client_id": client_id, ownership.STAMP_KEY: sig})

    async with app_client(settings_for(other_client=True, dispatch_automatic=True, ownership_key=key)) as orch, lkapi(lk) as lkc:
        await registered(orch, count=5)  # clarence, farah, acme's litebridge, and one unnamed per client
        # Acme's room (stamped for Acme) asks for clarence, which only the other tenant has.
        await lkc.room.create_room(api.CreateRoomRequest(name=theirs, metadata=stamped(theirs, OTHER_CLIENT_ID)))
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="clarence-coherence", room=theirs))
        event = await rejected(orch, theirs, "other_client")
        assert "belongs to another client" in event["message"] and OTHER_CLIENT_ID not in event["message"], event
        # Two clients share this server: an unsigned client_id is a claim anyone with a key could write.
        await lkc.room.create_room(api.CreateRoomRequest(name=forged, metadata=json.dumps({"client_id": CLIENT_ID})))
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="clarence-coherence", room=forged))
        event = await rejected(orch, forged, "other_client")
        assert "no valid ownership stamp" in event["message"], event
        # A pattern room of ours naming an agent id no client has.
        await lkc.room.create_room(api.CreateRoomRequest(name=unknown_room, metadata=stamped(unknown_room, CLIENT_ID)))
        event = await rejected(orch, unknown_room, "unknown_agent")
        assert "no-such-agent" in event["message"]
        assert containers(docker_client, scope) == []
        assert not await agents_in(lk, theirs) and not await agents_in(lk, forged)
        metrics = (await orch.get("/metrics")).text
        assert 'orchestrator_dispatch_rejections_total{reason="other_client"}' in metrics


async def test_limits_full_deployment_gets_no_jobs_and_a_full_room_is_refused(
    settings_for: Callable[..., Settings], lk: LiveKitServer, scope: str, docker_client: docker.DockerClient
) -> None:
    room, other = f"{scope}-limits", f"{scope}-limits-2"
    meta = json.dumps({"client_id": CLIENT_ID})
    async with app_client(settings_for(max_agents_per_room=1, max_agents_per_client=2)) as orch, lkapi(lk) as lkc:
        await registered(orch, count=2)
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="clarence-coherence", room=room, metadata=meta))
        await agent_listed(lk, room, "agent-clarence-coherence")
        # The room is full (one agent per room here): a second agent's job is refused at availability.
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=room, metadata=meta))
        event = await rejected(orch, room, "limits")
        assert "max_agents_per_room" in event["message"]
        assert [c["Labels"][Label.AGENT_SLUG] for c in containers(docker_client, scope, room=room)] == ["clarence-coherence"]

        # A second room fills the client's limit of 2: the registrations report FULL and LiveKit stops sending jobs.
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=other, metadata=meta))
        await agent_listed(lk, other, "agent-farah")

        async def full() -> bool:
            rows = (await orch.get("/api/v1/admin/dispatch")).json()["registrations"]
            return all(r["full"] and r["load"] == 1.0 for r in rows)

        await eventually(full, timeout=15, what="every registration reporting a full load")
        before = _jobs_received((await orch.get("/metrics")).text)
        third = f"{scope}-limits-3"
        await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=third, metadata=meta))

        async def livekit_gave_up() -> bool:
            # A FULL worker has no affinity: LiveKit's job request finds no server and it says so in its log.
            lines = lk.log_tail(1_000_000).splitlines()
            start = next((i for i, line in enumerate(lines) if "CreateDispatch" in line and third in line), None)
            return start is not None and any(
                "failed to send job request" in line and '"agentName": "farah"' in line for line in lines[start:]
            )

        await eventually(livekit_gave_up, timeout=15, what="LiveKit finding no worker to send the third room's job to")
        assert _jobs_received((await orch.get("/metrics")).text) == before, "LiveKit sent a job to a FULL worker"
        assert containers(docker_client, scope, room=third) == []


def _jobs_received(metrics: str) -> float:
    line = next((x for x in metrics.splitlines() if x.startswith('orchestrator_dispatch_jobs_total{outcome="received"}')), "")
    return float(line.split()[-1]) if line else 0.0


class SwitchableTenants:
    """Two real file stores, one answering at a time: a tenant change without restarting the orchestrator."""

    def __init__(self, store: FileTenantStore) -> None:
        self.store = store

    async def list_clients(self) -> list[Client]:
        return await self.store.list_clients()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)

    async def get_agent(self, client: Client, slug: str) -> Agent:
        return await self.store.get_agent(client, slug)


async def test_registrations_follow_tenant_changes_without_a_restart(
    settings_for: Callable[..., Settings], lk: LiveKitServer, tmp_path: Path
) -> None:
    settings = settings_for(dispatch_sync_interval_s=0.3)
    switch = SwitchableTenants(FileTenantStore(tenants(tmp_path / "before.yaml", lk, agents=[CLARENCE])))
    async with app_client(settings, tenants=switch) as orch:
        rows = await registered(orch, count=1)
        assert [r["agent_name"] for r in rows] == ["clarence-coherence"]
        switch.store = FileTenantStore(tenants(tmp_path / "after.yaml", lk, agents=[FARAH]))  # one added, one removed
        rows = await eventually(
            lambda: _names_when_registered(orch), timeout=15, what="farah registered and clarence gone",
        )
        assert rows == ["farah"]


async def _names_when_registered(orch: httpx.AsyncClient) -> list[str] | None:
    rows = (await orch.get("/api/v1/admin/dispatch")).json()["registrations"]
    names = [r["agent_name"] for r in rows if r["state"] == "registered"]
    return names if names == ["farah"] and len(rows) == 1 else None


async def test_livekit_restart_mid_call_registrations_come_back_without_a_duplicate(
    settings_for: Callable[..., Settings], scope: str, docker_client: docker.DockerClient, tmp_path: Path,
    agent_network: Any,
) -> None:
    own = LiveKitServer(api_key="restartkey", api_secret=secrets.token_hex(32), port=free_port(),
                        agent_gateway=agent_network.gateway).start()
    room = f"{scope}-restart"
    meta = json.dumps({"client_id": CLIENT_ID})
    try:
        settings = settings_for(tenants_file=tenants(tmp_path / "own.yaml", own), dispatch_reconnect_max_s=2)
        async with app_client(settings) as orch:
            await registered(orch, count=2)
            async with lkapi(own) as lkc:
                await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=room, metadata=meta))
            async with Participant(own.url, human_token(own, room)):
                await agent_listed(own, room, "agent-farah")
            seen = {c["Id"] for c in containers(docker_client, scope, room=room)}

            own.stop()
            for attempt in range(3):  # same port; its RTC ports are fresh, which another process may grab first
                try:
                    own.start()
                    break
                except RuntimeError:
                    if attempt == 2:
                        raise

            async def re_registered() -> bool:
                rows = (await orch.get("/api/v1/admin/dispatch")).json()["registrations"]
                return len(rows) == 2 and all(r["state"] == "registered" and r["registrations"] >= 2 for r in rows)

            await eventually(re_registered, timeout=30, what="both registrations back after the LiveKit restart", interval=0.3)
            # The restarted server lost its rooms and dispatches; the caller dispatches again, the human comes back.
            async with lkapi(own) as lkc:
                await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=room, metadata=meta))
            async with Participant(own.url, human_token(own, room)):
                await agent_listed(own, room, "agent-farah", timeout=45)
                running = [c for c in containers(docker_client, scope, room=room) if c["State"] == "running"]
                assert len(running) == 1, f"one running agent for the key, not {len(running)}"
                seen |= {c["Id"] for c in containers(docker_client, scope, room=room)}
                assert len(seen) <= 2, "the call's agent was replaced more than once"
    finally:
        own.stop()
