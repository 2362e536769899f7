"""Drill: kill -9 the orchestrator in the middle of a trigger burst, restart it, one reconcile pass → tidy."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter
from pathlib import Path

import docker
import httpx
import pytest

from tests.conftest import CLIENT_ID
from tests.drills.conftest import assert_tidy, by_room
from orchestrator.rules.naming import Label
from devtools.docker_helpers import TINY_IMAGE
from devtools.serve import serve_process

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(90)]

N = 24


def body(room: str) -> dict[str, str]:
    return {"agent_slug": "farah", "room_name": room, "user_id": "drill", "client_id": CLIENT_ID}


def count(client: docker.DockerClient, scope: str) -> int:
    """One sparse list call: no per-container inspect that could race with containers coming and going."""
    return len(client.api.containers(all=True, filters={"label": f"{Label.SCOPE}={scope}"}))


async def test_kill9_mid_burst_then_restart_leaves_no_duplicate_orphan_or_loss(
    scope: str, tenants_file: Path, docker_client: docker.DockerClient
) -> None:
    rooms = [f"k9-{i}" for i in range(N)]
    # The tiny image never joins LiveKit: the startup-timeout rule is off so that it cannot hide a loss.
    env = {"ORCH_AGENT_STARTUP_TIMEOUT_S": "0", "ORCH_RECONCILE_ENABLED": "false", "ORCH_MAX_AGENTS_PER_CLIENT": "100",
           "ORCH_MAX_AGENTS_TOTAL": "100"}
    answered: dict[str, str] = {}
    with serve_process(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, **env) as first:
        async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=N)) as http:
            async def one(room: str) -> None:
                r = await http.post(f"{first.url}/api/v1/trigger-agent", json=body(room))
                if r.status_code in (200, 201):
                    answered[room] = r.json()["container_id"]

            tasks = [asyncio.create_task(one(r)) for r in rooms]
            # Mid-burst by Docker's own count: a few containers exist, most triggers are still in flight.
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and await asyncio.to_thread(count, docker_client, scope) < 4:
                await asyncio.sleep(0.01)
            os.kill(first.proc.pid, signal.SIGKILL)
            first.proc.wait(timeout=10)
            await asyncio.gather(*tasks, return_exceptions=True)
    assert len(answered) < N, f"the kill did not land mid-burst ({len(answered)} of {N} answered)"
    before = {r: [(c.name, c.status) for c in cs] for r, cs in by_room(docker_client, scope).items()}
    print(f"\nkilled after {len(answered)} answers; Docker then held {sum(map(len, before.values()))} containers: "
          f"{sum(s == 'created' for cs in before.values() for _, s in cs)} created-not-started")

    # A container created in the instant of the kill is younger than any start timeout: let it age past one.
    await asyncio.sleep(1.2)
    restart_env = {**env, "ORCH_CONTAINER_START_TIMEOUT_S": "1"}
    with serve_process(scope=scope, tenants_file=tenants_file, image=TINY_IMAGE, **restart_env) as second:
        async with httpx.AsyncClient(timeout=30) as http:
            report = (await http.post(f"{second.url}/api/v1/admin/reconcile")).json()
            print("one pass:", dict(Counter(f'{a["kind"]}: {a["reason"]}' for a in report["actions"])))
            assert report["failed"] == 0, report
            # After one pass: nothing half-made, nothing duplicated, and nothing that was answered is gone.
            survivors = {r: cs for r, cs in by_room(docker_client, scope).items()}
            assert all(c.status == "running" for cs in survivors.values() for c in cs), survivors
            assert all(len(cs) == 1 for cs in survivors.values()), survivors
            for room, cid in answered.items():
                assert room in survivors and survivors[room][0].id == cid, f"answered container for {room} lost"
            # The callers retry what failed: every room ends with exactly one running container.
            results = await asyncio.gather(*(http.post(f"{second.url}/api/v1/trigger-agent", json=body(r)) for r in rooms))
            assert all(r.status_code in (200, 201) for r in results), [r.text for r in results if r.status_code not in (200, 201)]
            for r in results:
                if r.json()["room_name"] in answered:
                    assert r.json()["status"] == "reused" and r.json()["container_id"] == answered[r.json()["room_name"]]
        assert_tidy(docker_client, scope, rooms=set(rooms))
