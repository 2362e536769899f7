"""Drill: `docker kill` the real agent while a human is in the call → the agent is back in the room, once."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import docker
import pytest

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from tests.drills.conftest import assert_tidy
from devtools.agent_room import Participant, eventually
from devtools.livekit_server import LiveKitServer

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(90)]

AGENT_IMAGE = "agent-orchestrator/agent:latest"
IDENTITY = "agent-farah"


async def test_killed_agent_comes_back_while_the_human_stays(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient, livekit_server: LiveKitServer
) -> None:
    docker_client.images.get(AGENT_IMAGE)  # built by scripts/build-images; missing is a failure, not a skip
    settings = make_settings(agent_image=AGENT_IMAGE, agent_memory="512m", agent_cpus=1.0, agent_stop_timeout_s=5,
                             reconcile_enabled=True, reconcile_interval_s=60)  # Docker's die event must do it
    creds = LiveKitCredentials(url=livekit_server.url, api_key=livekit_server.api_key, api_secret=livekit_server.api_secret)
    gateway = LiveKitGateway()
    room = f"{scope}-call"

    async def identities() -> set[str]:
        return {p.identity for p in await gateway.list_participants(creds, room=room)}

    async def agent_sid() -> str | None:
        return next((p.sid for p in await gateway.list_participants(creds, room=room) if p.identity == IDENTITY), None)

    try:
        async with app_client(settings) as api:
            r = await api.post("/api/v1/trigger-agent",
                               json={"agent_slug": "farah", "room_name": room, "user_id": "alice", "client_id": CLIENT_ID})
            assert r.status_code == 201, r.text
            name, old_id = r.json()["container_name"], r.json()["container_id"]
            async with Participant(creds.url, r.json()["user_token"]) as human:
                first_sid = await eventually(agent_sid, timeout=30, what="the agent in the room")
                killed_at = time.monotonic()
                await asyncio.to_thread(docker_client.api.kill, name)

                def replaced() -> bool:
                    try:
                        c = docker_client.containers.get(name)
                    except docker.errors.NotFound:
                        return False
                    return c.status == "running" and (c.id != old_id or c.attrs["RestartCount"] > 0)

                await eventually(lambda: asyncio.to_thread(replaced), timeout=20, what="a running agent container again")
                # A new participant session (LiveKit replaces the dead one's stale session on the same identity).
                async def new_sid() -> str | None:
                    sid = await agent_sid()
                    return sid if sid and sid != first_sid else None

                await eventually(new_sid, timeout=30, what="the agent back in the room")
                back = time.monotonic() - killed_at
                assert human.room.isconnected(), "the human lost the call"
                assert "alice" in await identities()
                print(f"\nagent back in the room {back:.2f}s after docker kill")
            restarts = api._transport.app.state.reconciler.restarts  # type: ignore[attr-defined]
            assert all(rec.attempts <= settings.restart_max_attempts for rec in restarts.values())
    finally:
        await gateway.aclose()
    assert_tidy(docker_client, scope, rooms={room})

