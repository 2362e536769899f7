"""Drill: kill the LiveKit server → triggers answer 503 with Retry-After and create nothing; back → they work."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client, write_tenants
from tests.drills.conftest import assert_tidy, by_room
from devtools.docker_helpers import TINY_IMAGE
from devtools.livekit_server import LiveKitServer, free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(60)]


@pytest.fixture
def own_livekit() -> Iterator[LiveKitServer]:
    """This drill's own server (the session's is shared): stopped and started again on the same port."""
    server = LiveKitServer(api_key="drillkey", api_secret=secrets.token_hex(32), port=free_port()).start()
    yield server
    server.stop()


def restart(server: LiveKitServer, attempts: int = 3) -> None:
    """Start again on the same port; its RTC ports are fresh free ports, which another process may grab first."""
    for i in range(attempts):
        try:
            server.start()
            return
        except RuntimeError:
            if i == attempts - 1:
                raise


def body(room: str) -> dict[str, str]:
    return {"agent_slug": "farah", "room_name": room, "user_id": "drill", "client_id": CLIENT_ID}


async def test_livekit_down_gives_503_and_recovers(
    own_livekit: LiveKitServer, tmp_path: Path, scope: str, docker_client: docker.DockerClient
) -> None:
    settings = Settings(scope=scope, tenants_file=write_tenants(tmp_path / "t.yaml", own_livekit), agent_image=TINY_IMAGE,
                        agent_memory="64m", agent_cpus=0.2, reconcile_enabled=False)
    async with app_client(settings) as api:
        up = await api.post("/api/v1/trigger-agent", json=body("lk-a"))
        assert up.status_code == 201, up.text

        own_livekit.stop()
        for room in ("lk-b", "lk-a"):  # a new room and the running one (not in a call: LiveKit is asked again)
            r = await api.post("/api/v1/trigger-agent", json=body(room))
            assert r.status_code == 503, r.text
            assert int(r.headers["Retry-After"]) > 0
            assert "LiveKit" in r.json()["detail"] and "unreachable" in r.json()["detail"], r.json()
        assert set(by_room(docker_client, scope)) == {"lk-a"}, "a trigger created a container while LiveKit was down"

        restart(own_livekit)  # same port, same keys: the tenant's URL is valid again (rooms are gone: in memory)
        b = await api.post("/api/v1/trigger-agent", json=body("lk-b"))
        assert b.status_code == 201 and b.json()["status"] == "created", b.text
        a = await api.post("/api/v1/trigger-agent", json=body("lk-a"))
        assert a.status_code == 200 and a.json()["status"] == "reused", a.text
        assert a.json()["container_id"] == up.json()["container_id"]
        assert (await api.get("/healthz")).status_code == 200
    assert_tidy(docker_client, scope, rooms={"lk-a", "lk-b"})
