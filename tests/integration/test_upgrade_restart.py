"""An orchestrator upgrade drains without dropping calls: agents are Docker's, not children of `serve`.

A real `orchestrator serve` process launches an agent while a human is in the LiveKit room; the process is
stopped (SIGTERM, with a dashboard's event stream still open) and a new one started. The container keeps
running untouched (same id, same start time), the human stays connected, and the new process reuses it
and rebuilds the room from Docker labels + LiveKit.
"""

from __future__ import annotations

import asyncio
import signal
import time
from contextlib import ExitStack
from pathlib import Path

import docker
import httpx
import pytest
from livekit import rtc

from orchestrator.core.apikeys import generate
from tests.conftest import CLIENT_ID
from devtools.agent_room import eventually
from devtools.docker_helpers import TINY_IMAGE
from devtools.livekit_server import free_port
from devtools.serve import Served, serve_process

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
ADMIN = generate()


def serving(stack: ExitStack, scope: str, tenants_file: Path, port: int) -> Served:
    """A real `orchestrator serve` on `port`, stopped (if still running) when the test ends."""
    return stack.enter_context(serve_process(
        scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, port=port,
        ORCH_ADMIN_API_KEY=ADMIN, ORCH_AGENT_STARTUP_TIMEOUT_S="0",
    ))


async def test_agents_and_calls_survive_an_orchestrator_restart(scope: str, tenants_file: Path, docker_client: docker.DockerClient) -> None:
    port = free_port()
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {ADMIN}"}
    body = {"agent_slug": "farah", "room_name": "upgrade-room", "user_id": "caller", "client_id": CLIENT_ID}
    human = rtc.Room()
    try:
        with ExitStack() as stack:
            old = serving(stack, scope, tenants_file, port).proc
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
                await asyncio.to_thread(serving, stack, scope, tenants_file, port)  # returns once /healthz is 200
                again = (await c.post("/api/v1/trigger-agent", json=body)).json()
                assert (again["status"], again["container_id"]) == ("reused", first["container_id"])

                async def room_rebuilt() -> dict | None:  # type: ignore[type-arg]
                    rows = (await c.get("/api/v1/admin/rooms")).json()["rooms"]
                    return next((r for r in rows if r["room"] == "upgrade-room" and "caller" in r["humans"]), None)

                row = await eventually(room_rebuilt, timeout=15, what="the new process to rebuild the room")
                gap_s = time.monotonic() - restarted_at
            after = await asyncio.to_thread(docker_client.api.inspect_container, first["container_name"])
            assert after["State"]["StartedAt"] == before["State"]["StartedAt"], "the agent was restarted"
            assert human.connection_state == rtc.ConnectionState.CONN_CONNECTED
            print(f"\nserve stopped in {shutdown_s:.2f}s (SSE open); new serve healthy and room rebuilt ({row['state']}) "
                  f"{gap_s:.2f}s after start; agent container untouched")
    finally:
        await human.disconnect()
