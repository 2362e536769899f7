"""A client's key on its own rooms: list, read the agent's phase, wait until the real agent joined, stop it;
never another client's rooms."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import docker
import httpx
import pytest

from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client
from devtools.docker_helpers import TINY_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
AGENT_IMAGE = "agent-orchestrator/agent:latest"
OWN, OTHER, ADMIN = generate(), generate(), generate()


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.yaml"
    path.write_text("keys:\n" + entry_yaml(name="own", key=OWN, client_id=CLIENT_ID)
                    + entry_yaml(name="other", key=OTHER, client_id=OTHER_CLIENT_ID) + entry_yaml(name="ops", key=ADMIN, client_id=None))
    return path


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def trigger_body(room: str, slug: str = "farah") -> dict[str, str]:
    return {"agent_slug": slug, "room_name": room, "user_id": "alice", "client_id": CLIENT_ID}


@pytest.fixture
async def client_api(make_settings: Callable[..., Settings], keys_file: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings(api_keys_file=keys_file, agent_image=AGENT_IMAGE, agent_memory="256m")) as c:
        yield c


async def test_client_sees_its_agent_join_and_stops_it(client_api: httpx.AsyncClient, docker_client: docker.DockerClient) -> None:
    c = client_api
    made = await c.post("/api/v1/trigger-agent", json=trigger_body("own-room"), headers=auth(OWN))
    assert made.status_code == 201, made.text

    listed = (await c.get("/api/v1/rooms", headers=auth(OWN))).json()["rooms"]
    assert [(r["room"], [a["agent_slug"] for a in r["agents"]]) for r in listed] == [("own-room", ["farah"])]
    waited = await c.get("/api/v1/rooms/own-room/wait", params={"timeout_s": 30}, headers=auth(OWN))
    assert waited.status_code == 200 and waited.json()["reached"] is True, waited.text
    [agent] = waited.json()["agents"]
    assert agent["phase"] in ("joined", "in_grace") and agent["container_name"] == made.json()["container_name"]
    one = (await c.get("/api/v1/rooms/own-room", headers=auth(OWN))).json()
    assert one["client_id"] == CLIENT_ID and one["humans"] == [] and one["agents"][0]["phase"] in ("joined", "in_grace")

    # Another client sees none of it, and may not ask for it by name.
    assert (await c.get("/api/v1/rooms", headers=auth(OTHER))).json() == {"rooms": []}
    assert (await c.get("/api/v1/rooms/own-room", headers=auth(OTHER))).status_code == 404
    denied = await c.get("/api/v1/rooms", params={"client_id": CLIENT_ID}, headers=auth(OTHER))
    assert denied.status_code == 403 and denied.json()["code"] == "forbidden"
    assert (await c.delete("/api/v1/rooms/own-room/agents/farah", headers=auth(OTHER))).status_code == 404
    # An admin key names the client.
    assert (await c.get("/api/v1/rooms", headers=auth(ADMIN))).status_code == 422
    assert len((await c.get("/api/v1/rooms", params={"client_id": CLIENT_ID}, headers=auth(ADMIN))).json()["rooms"]) == 1

    stopped = await c.delete("/api/v1/rooms/own-room/agents/farah", headers=auth(OWN))
    assert stopped.status_code == 200 and stopped.json()["stopped"] == [made.json()["container_name"]], stopped.text
    with pytest.raises(docker.errors.NotFound):
        docker_client.containers.get(made.json()["container_name"])
    gone = await c.get("/api/v1/rooms/own-room", headers=auth(OWN))
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"


async def test_wait_times_out_with_the_reason(make_settings: Callable[..., Settings], keys_file: Path) -> None:
    # The tiny image never joins: after the timeout the answer says where the agent is stuck.
    async with app_client(make_settings(api_keys_file=keys_file, agent_image=TINY_IMAGE)) as c:
        assert (await c.post("/api/v1/trigger-agent", json=trigger_body("stuck-room"), headers=auth(OWN))).status_code == 201
        waited = (await c.get("/api/v1/rooms/stuck-room/wait", params={"timeout_s": 1}, headers=auth(OWN))).json()
        assert waited["reached"] is False and waited["waited_s"] >= 1
        assert waited["agents"][0]["phase"] == "starting" and "not in the room yet" in waited["agents"][0]["reason"]
        closed = await c.post("/api/v1/rooms/stuck-room/close", headers=auth(OWN))
        assert closed.status_code == 200 and closed.json()["closed"] == {"client_id": CLIENT_ID, "room": "stuck-room"}
