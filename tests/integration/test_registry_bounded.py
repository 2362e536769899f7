"""`serve` without its reconcile loop (cron mode): webhooks about rooms with no agent of ours are not kept,
and finished rooms are forgotten, so the room registry stays bounded."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Callable

import httpx
import pytest
from livekit import api as lkapi

from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.livekit_server import LiveKitServer

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


def _hook(livekit: LiveKitServer, event: str, room: str, identity: str = "") -> tuple[str, dict[str, str]]:
    body = json.dumps({
        "event": event, "id": f"EV_{secrets.token_hex(6)}", "participant": {"identity": identity},
        "room": {"name": room, "metadata": json.dumps({"client_id": CLIENT_ID, "agent_slug": "farah", "agent_id": "agent-farah"})},
    })
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return body, {"Authorization": lkapi.AccessToken(livekit.api_key, livekit.api_secret).with_sha256(digest).to_jwt()}


async def _rooms(c: httpx.AsyncClient) -> list[dict[str, object]]:
    return (await c.get("/api/v1/admin/rooms")).json()["rooms"]


async def test_cron_mode_registry_keeps_only_rooms_with_our_agents(
    make_settings: Callable[..., Settings], livekit_server: LiveKitServer
) -> None:
    async with app_client(make_settings(reconcile_enabled=False)) as c:
        for i in range(300):
            room = f"stranger-{i}"
            for event, who in (("participant_joined", "user"), ("participant_left", "user"), ("room_finished", "")):
                body, headers = _hook(livekit_server, event, room, who)
                assert (await c.post("/api/v1/livekit/webhook", content=body, headers=headers)).status_code == 200
        assert await _rooms(c) == []

        room = f"ours-{secrets.token_hex(3)}"
        r = await c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        assert r.status_code == 201, r.text
        body, headers = _hook(livekit_server, "participant_joined", room, "u")
        await c.post("/api/v1/livekit/webhook", content=body, headers=headers)
        assert [(x["room"], x["humans"]) for x in await _rooms(c)] == [(room, ["u"])]
        body, headers = _hook(livekit_server, "room_finished", room)
        await c.post("/api/v1/livekit/webhook", content=body, headers=headers)
        assert await _rooms(c) == []  # nothing in this process would ever act on a finished room
