"""An orchestrator upgrade drains without dropping calls: agents are Docker's, not children of `serve`.

A real `orchestrator serve` process launches an agent while a human is in the LiveKit room; the process is
stopped (SIGTERM, with a dashboard's event stream still open) and a new one started. The container keeps
running untouched (same id, same start time), the human stays connected, and the new process reuses it
and rebuilds the room from Docker labels + LiveKit.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import docker
import httpx
import pytest
from livekit import rtc

from orchestrator.apikeys import generate
from tests.conftest import CLIENT_ID
from tests.support.docker_helpers import TINY_IMAGE
from tests.support.livekit_server import free_port

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
ADMIN = generate()


def start_serve(scope: str, tenants_file: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "ORCH_SCOPE": scope, "ORCH_TENANTS_FILE": str(tenants_file), "ORCH_AGENT_IMAGE": TINY_IMAGE,
           "ORCH_AGENT_MEMORY": "64m", "ORCH_AGENT_CPUS": "0.2", "ORCH_PORT": str(port), "ORCH_ADMIN_API_KEY": ADMIN,
           "ORCH_AGENT_STARTUP_TIMEOUT_S": "0"}
    return subprocess.Popen([sys.executable, "-m", "orchestrator.cli", "serve"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def healthy(url: str, proc: subprocess.Popen[bytes], *, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient() as c:
        while True:
            assert proc.poll() is None, "orchestrator exited early"
            try:
                if (await c.get(f"{url}/healthz", timeout=1)).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "orchestrator not healthy in time"
            await asyncio.sleep(0.1)


async def test_agents_and_calls_survive_an_orchestrator_restart(scope: str, tenants_file: Path, docker_client: docker.DockerClient) -> None:
    port = free_port()
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {ADMIN}"}
    body = {"agent_slug": "farah", "room_name": "upgrade-room", "user_id": "caller", "client_id": CLIENT_ID}
    old = start_serve(scope, tenants_file, port)
    human = rtc.Room()
    new: subprocess.Popen[bytes] | None = None
    try:
        await healthy(url, old)
        async with httpx.AsyncClient(base_url=url, headers=auth, timeout=30) as c:
            first = (await c.post("/api/v1/trigger-agent", json=body)).json()
            await human.connect(first["livekit_url"], first["user_token"])
            before = await asyncio.to_thread(docker_client.api.inspect_container, first["container_name"])

            # Stop the old process the way `docker stop` / systemd do, with an SSE stream still open.
            async with c.stream("GET", "/api/v1/admin/events/stream") as stream:
                assert stream.status_code == 200
                stopped_at = time.monotonic()
                old.send_signal(signal.SIGTERM)
                await asyncio.to_thread(old.wait, 30)
            shutdown_s = time.monotonic() - stopped_at
            assert shutdown_s < 8, f"serve took {shutdown_s:.1f}s to stop with an open event stream"

            during = await asyncio.to_thread(docker_client.api.inspect_container, first["container_name"])
            assert during["State"]["Running"] and during["Id"] == before["Id"]
            assert human.connection_state == rtc.ConnectionState.CONN_CONNECTED

            restarted_at = time.monotonic()
            new = start_serve(scope, tenants_file, port)
            await healthy(url, new)
            again = (await c.post("/api/v1/trigger-agent", json=body)).json()
            assert (again["status"], again["container_id"]) == ("reused", first["container_id"])

            async def room_rebuilt() -> dict | None:  # type: ignore[type-arg]
                rows = (await c.get("/api/v1/admin/rooms")).json()["rooms"]
                return next((r for r in rows if r["room"] == "upgrade-room" and "caller" in r["humans"]), None)

            deadline = time.monotonic() + 15
            while not (row := await room_rebuilt()):
                assert time.monotonic() < deadline, "the new process did not rebuild the room"
                await asyncio.sleep(0.1)
            gap_s = time.monotonic() - restarted_at
        after = await asyncio.to_thread(docker_client.api.inspect_container, first["container_name"])
        assert after["State"]["StartedAt"] == before["State"]["StartedAt"], "the agent was restarted"
        assert human.connection_state == rtc.ConnectionState.CONN_CONNECTED
        print(f"\nserve stopped in {shutdown_s:.2f}s (SSE open); new serve healthy and room rebuilt ({row['state']}) "
              f"{gap_s:.2f}s after start; agent container untouched")
    finally:
        await human.disconnect()
        for p in (old, new):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
