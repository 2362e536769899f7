"""Two tenants on one LiveKit project (same url/key/secret): neither can trigger into, or take over, the other's room."""

from __future__ import annotations

import base64
import hashlib
import json
import secrets

import docker
import httpx
import jwt
import pytest
from livekit import api as lkapi

from orchestrator.rules.naming import Label
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID
from devtools.docker_helpers import scoped
from devtools.livekit_server import LiveKitServer

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


def _body(room: str, client_id: str, *, slug: str = "farah", user: str = "user-1") -> dict[str, object]:
    return {"agent_slug": slug, "mode": "voice", "room_name": room, "user_id": user, "client_id": client_id}


async def _room(livekit: LiveKitServer, name: str) -> lkapi.Room | None:
    async with lkapi.LiveKitAPI(livekit.http_url, livekit.api_key, livekit.api_secret) as lk:
        rooms = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[name]))).rooms
    return rooms[0] if rooms else None


async def test_another_tenants_room_is_refused_by_name(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str, livekit_server: LiveKitServer
) -> None:
    room = f"call-{secrets.token_hex(4)}"
    first = await api.post("/api/v1/trigger-agent", json=_body(room, CLIENT_ID))
    assert first.status_code == 201, first.text
    mine = docker_client.containers.get(first.json()["container_id"])

    theirs = await api.post("/api/v1/trigger-agent", json=_body(room, OTHER_CLIENT_ID))
    assert theirs.status_code == 409, theirs.text
    answer = theirs.json()
    assert answer["code"] == "conflict" and "room_name" in answer["detail"] and "user_token" not in answer
    assert CLIENT_ID not in theirs.text  # the owner is not disclosed to the other tenant
    # Nothing was made for the intruder, the owner's agent is untouched and the room still names its owner.
    assert [c.id for c in scoped(docker_client, scope)] == [mine.id]
    assert docker_client.containers.get(mine.id).status == "running"
    lk_room = await _room(livekit_server, room)
    assert lk_room is not None and json.loads(lk_room.metadata)["client_id"] == CLIENT_ID

    # The owner itself keeps working: reuse on every further trigger.
    again = await api.post("/api/v1/trigger-agent", json=_body(room, CLIENT_ID))
    assert again.status_code == 200 and again.json()["status"] == "reused"


async def test_room_not_made_by_us_on_a_shared_project_is_refused(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, scope: str, livekit_server: LiveKitServer
) -> None:
    """A room without our metadata on a shared project could be anyone's (e.g. auto-created by a join)."""
    room = f"foreign-{secrets.token_hex(4)}"
    async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
        await lk.room.create_room(lkapi.CreateRoomRequest(name=room, empty_timeout=60))
    refused = await api.post("/api/v1/trigger-agent", json=_body(room, CLIENT_ID))
    assert refused.status_code == 409, refused.text
    assert scoped(docker_client, scope) == []
    lk_room = await _room(livekit_server, room)
    assert lk_room is not None and lk_room.metadata == ""


async def test_agent_token_names_its_client(
    api: httpx.AsyncClient, docker_client: docker.DockerClient, livekit_server: LiveKitServer
) -> None:
    r = await api.post("/api/v1/trigger-agent", json=_body(f"attr-{secrets.token_hex(3)}", OTHER_CLIENT_ID))
    assert r.status_code == 201, r.text
    container = docker_client.containers.get(r.json()["container_id"])
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    claims = jwt.decode(env["LIVEKIT_TOKEN"], livekit_server.api_secret, algorithms=["HS256"])
    assert claims["attributes"]["orchestrator.client_id"] == OTHER_CLIENT_ID
    assert container.labels[Label.CLIENT_ID] == OTHER_CLIENT_ID


def _signed_webhook(livekit: LiveKitServer, event: dict[str, object]) -> tuple[str, dict[str, str]]:
    body = json.dumps(event)
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    token = lkapi.AccessToken(livekit.api_key, livekit.api_secret).with_sha256(digest).to_jwt()
    return body, {"Authorization": token, "Content-Type": "application/webhook+json"}


async def test_webhook_ownership_follows_the_room_metadata(api: httpx.AsyncClient, livekit_server: LiveKitServer) -> None:
    """Both tenants share the signing key: only the client the room metadata names gets the event; a room
    that names none is nobody's (it was not made by this orchestrator)."""
    room_a, room_x = f"hook-{secrets.token_hex(3)}", f"hook-{secrets.token_hex(3)}"
    assert (await api.post("/api/v1/trigger-agent", json=_body(room_a, OTHER_CLIENT_ID))).status_code == 201
    owned = {"client_id": OTHER_CLIENT_ID, "agent_slug": "farah", "agent_id": "agent-acme-farah"}
    for i, (room, metadata) in enumerate(((room_a, json.dumps(owned)), (room_x, ""))):
        body, headers = _signed_webhook(livekit_server, {
            "event": "participant_joined", "id": f"EV_{secrets.token_hex(4)}_{i}",
            "room": {"name": room, "metadata": metadata}, "participant": {"identity": "user-1"},
        })
        r = await api.post("/api/v1/livekit/webhook", content=body, headers=headers)
        assert r.status_code == 200, r.text
    rooms = (await api.get("/api/v1/admin/rooms")).json()["rooms"]
    seen = sorted((r["client_id"], r["room"], r["humans"]) for r in rooms if r["room"] in (room_a, room_x))
    assert seen == [(OTHER_CLIENT_ID, room_a, ["user-1"])]
