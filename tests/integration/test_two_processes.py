"""Two orchestrator processes against one engine: Docker's unique name makes exactly one container."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import CLIENT_ID
from tests.support.docker_helpers import TINY_IMAGE, scoped
from tests.support.livekit_server import free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


def wait_healthy(url: str, proc: subprocess.Popen[bytes], *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"orchestrator exited: {proc.stdout.read().decode() if proc.stdout else ''}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"orchestrator at {url} not healthy after {timeout_s}s")


@pytest.fixture
def two_orchestrators(scope: str, tenants_file: Path) -> Iterator[list[str]]:
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_TENANTS_FILE": str(tenants_file), "ORCH_AGENT_IMAGE": TINY_IMAGE,
           "ORCH_AGENT_MEMORY": "64m", "ORCH_AGENT_CPUS": "0.2"}
    procs, urls = [], []
    for _ in range(2):
        port = free_port()
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "orchestrator.cli", "serve", "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        ))
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url, proc in zip(urls, procs):
            wait_healthy(url, proc)
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(timeout=10)


async def test_two_processes_racing_make_one_container(
    two_orchestrators: list[str], docker_client: docker.DockerClient, scope: str
) -> None:
    payload = {"agent_slug": "farah", "mode": "text", "room_name": "race-room", "user_id": "u", "client_id": CLIENT_ID}
    async with httpx.AsyncClient(timeout=60) as client:
        answers = await asyncio.gather(
            *(client.post(f"{two_orchestrators[i % 2]}/api/v1/trigger-agent", json=payload) for i in range(40))
        )
    assert {r.status_code for r in answers} == {200}, [r.text for r in answers if r.status_code != 200][:3]
    assert len({r.json()["container_id"] for r in answers}) == 1
    assert [r.json()["status"] for r in answers].count("created") == 1
    assert len(scoped(docker_client, scope)) == 1
