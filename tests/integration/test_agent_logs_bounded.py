"""Agent logs are capped on disk (json-file max-size/max-file from settings) and "last N lines" is capped in bytes."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import docker
import pytest

from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.agent_room import eventually
from devtools.docker_helpers import TINY_IMAGE

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def test_agent_containers_get_a_log_size_cap(make_settings: Callable[..., Settings], docker_client: docker.DockerClient) -> None:
    async with app_client(make_settings(agent_log_max_size="2m", agent_log_max_files=2)) as c:
        r = await c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": "logcap"})
        assert r.status_code == 201, r.text
    log_config = docker_client.containers.get(r.json()["container_id"]).attrs["HostConfig"]["LogConfig"]
    assert log_config == {"Type": "json-file", "Config": {"max-size": "2m", "max-file": "2"}}


async def test_last_lines_are_bounded_in_bytes(docker_client: docker.DockerClient, scope: str) -> None:
    # Twenty lines of 1 MiB each: "the last 20 lines" must not mean 20 MiB in our log.
    noisy = docker_client.containers.run(
        TINY_IMAGE, ["sh", "-c", 'for i in 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20; do '
                                 'head -c 1048576 /dev/zero | tr "\\0" x; echo " end $i"; done; echo done'],
        labels={Label.MANAGED: "true", Label.SCOPE: scope}, detach=True,
    )
    await eventually(lambda: _exited(docker_client, noisy.id), timeout=30, what="the noisy container to finish", interval=0.1)
    runtime = DockerRuntime()
    try:
        tail = await runtime.logs_tail(noisy.id, lines=20)
    finally:
        runtime.close()
    assert len(tail.encode()) <= 16 * 1024, len(tail.encode())
    assert tail.rstrip().endswith("done")  # the newest lines are the ones kept
    assert "more bytes]" in tail  # each long line is cut, saying by how much


async def test_last_lines_of_a_running_container_return(docker_client: docker.DockerClient, scope: str) -> None:
    """Reading as a stream must not follow the log of a container that keeps running."""
    alive = docker_client.containers.run(TINY_IMAGE, ["sh", "-c", "echo hello; sleep 300"],
                                         labels={Label.MANAGED: "true", Label.SCOPE: scope}, detach=True)
    await eventually(lambda: asyncio.to_thread(lambda: b"hello" in alive.logs()), timeout=10, what="the first line")
    runtime = DockerRuntime()
    try:
        assert (await asyncio.wait_for(runtime.logs_tail(alive.id, lines=5), timeout=20)).strip() == "hello"
    finally:
        runtime.close()


async def _exited(dc: docker.DockerClient, cid: str) -> bool:
    dc_container = dc.containers.get(cid)
    return dc_container.status == "exited"
