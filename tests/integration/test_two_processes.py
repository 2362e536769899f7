"""Two orchestrator processes against one engine: Docker's unique name makes exactly one container."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import CLIENT_ID
from devtools.docker_helpers import TINY_IMAGE, scoped
from devtools.serve import serve

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


@pytest.fixture
def two_orchestrators(scope: str, tenants_file: Path) -> Iterator[list[str]]:
    with serve(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE) as a, \
         serve(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE) as b:
        yield [a, b]


async def test_two_processes_racing_make_one_container(
    two_orchestrators: list[str], docker_client: docker.DockerClient, scope: str
) -> None:
    payload = {"agent_slug": "farah", "mode": "text", "room_name": "race-room", "user_id": "u", "client_id": CLIENT_ID}
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post(f"{two_orchestrators[i % 2]}/api/v1/trigger-agent", json=payload) for i in range(40))
        )
    # One answer made the container (201), all others reused it (200), whichever process they reached.
    assert sorted(r.status_code for r in answers) == [200] * 39 + [201], [r.text for r in answers if r.status_code not in (200, 201)][:3]
    assert len({r.json()["container_id"] for r in answers}) == 1
    assert [r.json()["status"] for r in answers].count("created") == 1
    assert len(scoped(docker_client, scope)) == 1
