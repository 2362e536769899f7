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
