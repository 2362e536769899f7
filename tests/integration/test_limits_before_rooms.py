"""A trigger refused by a limit (429) leaves nothing behind: no container and no LiveKit room."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import docker
import pytest
from livekit import api as lkapi

from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.docker_helpers import scoped
from devtools.livekit_server import LiveKitServer

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def test_refused_triggers_make_no_rooms(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str, livekit_server: LiveKitServer
) -> None:
    prefix = f"lim-{secrets.token_hex(3)}"
    rooms = [f"{prefix}-{i}" for i in range(30)]
    async with app_client(make_settings(max_agents_per_client=1)) as c:
        first = await c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": rooms[0]})
        assert first.status_code == 201, first.text
        refused = await asyncio.gather(*(
            c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": r})
            for r in rooms[1:]
        ))
    assert [r.status_code for r in refused] == [429] * 29
    assert all("max_agents_per_client" in r.json()["detail"] for r in refused)
    assert len(scoped(docker_client, scope)) == 1
    async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
        made = {r.name for r in (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=rooms))).rooms}
    assert made == {rooms[0]}, f"{len(made) - 1} rooms were made for refused triggers"
