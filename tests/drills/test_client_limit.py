"""Drill: a burst far over the per-client limit → exactly `limit` containers, the rest 429, none ever created over it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import docker
import pytest

from orchestrator.rules.naming import Label
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client
from tests.drills.conftest import assert_tidy, by_room

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(60)]

LIMIT = 3
N = 12


def body(room: str, client_id: str = CLIENT_ID) -> dict[str, str]:
    return {"agent_slug": "farah", "room_name": room, "user_id": "drill", "client_id": client_id}


def creations(client: docker.DockerClient, scope: str, since: float, until: float) -> list[str]:
    """Every container Docker created for this scope in the window, from the engine's own event log."""
    events = client.events(since=int(since), until=int(until) + 1, decode=True,
                           filters={"type": "container", "event": "create", "label": f"{Label.SCOPE}={scope}"})
    return [e["Actor"]["Attributes"].get(Label.ROOM, "") for e in events]


async def test_burst_over_client_limit_gets_429_and_never_runs_more(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient
) -> None:
    settings = make_settings(max_agents_per_client=LIMIT, limit_retry_after_s=7)
    rooms = [f"lim-{i}" for i in range(N)]
    t0 = time.time()
    async with app_client(settings) as api:
        results = await asyncio.gather(*(api.post("/api/v1/trigger-agent", json=body(r)) for r in rooms))
        codes = sorted(r.status_code for r in results)
        assert codes == [201] * LIMIT + [429] * (N - LIMIT), [r.text for r in results]
        for r in results:
            if r.status_code == 429:
                assert r.headers["Retry-After"] == "7"
                assert "max_agents_per_client" in r.json()["detail"], r.json()
        admitted = {r.json()["room_name"] for r in results if r.status_code == 201}
        assert_tidy(docker_client, scope, rooms=admitted)

        # Reuse is never limited; another client has its own budget; still nothing over the limit.
        again = await api.post("/api/v1/trigger-agent", json=body(sorted(admitted)[0]))
        assert again.status_code == 200 and again.json()["status"] == "reused"
        other = await api.post("/api/v1/trigger-agent", json=body("lim-other", OTHER_CLIENT_ID))
        assert other.status_code == 201, other.text
        over = await api.post("/api/v1/trigger-agent", json=body("lim-late"))
        assert over.status_code == 429

        # A freed slot is usable at once.
        closed = sorted(admitted)[0]
        r = await api.post(f"/api/v1/admin/rooms/{CLIENT_ID}/{closed}/close")
        assert r.status_code == 200, r.text
        late = await api.post("/api/v1/trigger-agent", json=body("lim-late"))
        assert late.status_code == 201, late.text
    created = await asyncio.to_thread(creations, docker_client, scope, t0, time.time())
    assert sorted(created) == sorted([*admitted, "lim-other", "lim-late"]), f"Docker created: {sorted(created)}"
    mine = [c for cs in by_room(docker_client, scope).values() for c in cs if c.labels.get(Label.CLIENT_ID) == CLIENT_ID]
    assert len(mine) == LIMIT and all(c.status == "running" for c in mine), [(c.name, c.status) for c in mine]
