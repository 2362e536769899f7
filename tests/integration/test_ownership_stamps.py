"""Two tenants on one real LiveKit server, each with its own API key: metadata either can write proves
nothing; only the orchestrator's ownership stamp (HMAC over client, room, creation time) gives a room away."""

from __future__ import annotations

import json
import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from livekit import api as lkapi

from orchestrator.rules.isolation import AgentNetwork
from orchestrator.rules.ownership import STAMP_KEY
from orchestrator.settings import Settings
from devtools.livekit_server import LiveKitServer, free_port
from devtools.world import app_client

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
A, B = "client-a", "client-b"


@pytest.fixture(scope="module")
def two_key_server(agent_network: AgentNetwork) -> Iterator[LiveKitServer]:
    server = LiveKitServer(
        api_key="keya", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=agent_network.gateway,
        extra_keys={"keyb": secrets.token_hex(32)},
    ).start()
    yield server
    server.stop()


@pytest.fixture
async def api_a(tmp_path: Path, two_key_server: LiveKitServer, make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    lk = two_key_server
    agents = [{"id": "agent-farah", "slug": "farah", "name": "Farah"}]
    clients = [
        {"id": A, "name": "A", "livekit": {"url": lk.url, "api_key": "keya", "api_secret": lk.api_secret}, "agents": agents},
        {"id": B, "name": "B", "livekit": {"url": lk.url, "api_key": "keyb", "api_secret": lk.extra_keys["keyb"]}, "agents": agents},
    ]
    (tmp_path / "tenants.yaml").write_text(yaml.safe_dump({"clients": clients}))
    async with app_client(make_settings(tenants_file=tmp_path / "tenants.yaml", usage_sampling_enabled=False)) as c:
        yield c


def tenant_b(lk: LiveKitServer) -> lkapi.LiveKitAPI:
    """Tenant B talking to LiveKit directly with its own key (any key of a server reaches all its rooms)."""
    return lkapi.LiveKitAPI(lk.http_url, "keyb", lk.extra_keys["keyb"])


async def trigger(api: httpx.AsyncClient, room: str) -> httpx.Response:
    return await api.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": A, "room_name": room})


async def test_a_room_another_tenant_made_is_refused_whatever_its_metadata_claims(
    api_a: httpx.AsyncClient, two_key_server: LiveKitServer
) -> None:
    claimed, bare = f"claim-{secrets.token_hex(3)}", f"bare-{secrets.token_hex(3)}"
    async with tenant_b(two_key_server) as lk:
        await lk.room.create_room(lkapi.CreateRoomRequest(name=claimed, metadata=json.dumps({"client_id": A})))
        await lk.room.create_room(lkapi.CreateRoomRequest(name=bare))
    for room in (claimed, bare):
        r = await trigger(api_a, room)
        assert r.status_code == 409, f"{room}: {r.status_code} {r.text}"
        assert "ownership stamp" in r.json()["detail"] or "did not create" in r.json()["detail"]


async def test_a_stamp_copied_to_another_room_proves_nothing(api_a: httpx.AsyncClient, two_key_server: LiveKitServer) -> None:
    mine, copy = f"mine-{secrets.token_hex(3)}", f"copy-{secrets.token_hex(3)}"
    first = await trigger(api_a, mine)
    assert first.status_code == 201, first.text
    async with tenant_b(two_key_server) as lk:
        room = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[mine]))).rooms[0]
        assert STAMP_KEY in json.loads(room.metadata)  # the orchestrator stamped its room
        await lk.room.create_room(lkapi.CreateRoomRequest(name=copy, metadata=room.metadata))
    again = await trigger(api_a, mine)
    assert again.status_code == 200 and again.json()["status"] == "reused", again.text
    stolen = await trigger(api_a, copy)
    assert stolen.status_code == 409 and "does not verify" in stolen.json()["detail"], stolen.text


async def trigger_as(api: httpx.AsyncClient, client: str, room: str) -> httpx.Response:
    return await api.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": client, "room_name": room})


async def test_tokens_live_only_as_long_as_joining_needs(api_a: httpx.AsyncClient) -> None:
    import jwt

    r = await trigger(api_a, f"ttl-{secrets.token_hex(3)}")
    assert r.status_code == 201, r.text
    claims = jwt.decode(r.json()["user_token"], options={"verify_signature": False})
    assert claims["exp"] - claims["nbf"] <= 300, claims  # was 2 h: long enough to join the next tenant's room


async def test_a_leftover_agent_never_treats_the_next_tenants_room_as_its_own(
    api_a: httpx.AsyncClient, two_key_server: LiveKitServer
) -> None:
    room = f"reused-{secrets.token_hex(3)}"
    assert (await trigger_as(api_a, A, room)).status_code == 201
    async with lkapi.LiveKitAPI(two_key_server.http_url, "keya", two_key_server.api_secret) as lk:
        await lk.room.delete_room(lkapi.DeleteRoomRequest(room=room))  # A's call ended; its container is left over
    made = await trigger_as(api_a, B, room)  # B now starts a room of the same name (stamped for B)
    assert made.status_code == 201, made.text
    # A's view of the room shows none of B's people, and A's close stops A's agent but never deletes B's room.
    seen = await api_a.get(f"/api/v1/rooms/{room}", params={"client_id": A})
    assert seen.status_code == 200 and seen.json()["humans"] == [], seen.text
    closed = await api_a.post(f"/api/v1/admin/rooms/{A}/{room}/close")
    assert closed.status_code == 200, closed.text
    async with tenant_b(two_key_server) as lk:
        still = (await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[room]))).rooms
    assert still and json.loads(still[0].metadata)["client_id"] == B, "A's close deleted B's room"
