"""Churn on the real engine: a client at its limit closes all its agents (admin API), then triggers as many again."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable

import docker
import httpx
import pytest

from api.app import create_app
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID
from devtools.docker_helpers import scoped
from devtools.livekit_server import LiveKitServer
from devtools.agent_room import eventually

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
LIMIT = 5


async def test_closed_agents_do_not_count_against_the_next_round(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str, livekit_server: LiveKitServer
) -> None:
    app = create_app(make_settings(max_agents_per_client=LIMIT, usage_sampling_enabled=False))
    async with app.router.lifespan_context(app):
        engine = app.state.engine
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1", timeout=60) as c:
            assert await engine.informer.wait_synced(timeout_s=20)
            for cycle in range(3):
                rooms = [f"churn-{secrets.token_hex(3)}-{i}" for i in range(LIMIT)]
                made = await asyncio.gather(*(
                    c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": r})
                    for r in rooms
                ))
                assert [r.status_code for r in made] == [201] * LIMIT, f"cycle {cycle}: {[r.text for r in made if r.status_code != 201]}"
                closed = await asyncio.gather(*(c.post(f"/api/v1/admin/rooms/{CLIENT_ID}/{r}/close") for r in rooms))
                assert [r.status_code for r in closed] == [200] * LIMIT, [r.text for r in closed]

                async def none_left() -> bool:
                    # `docker ps` shows none, and the watch-fed view has seen each of them come and go.
                    return not scoped(docker_client, scope) and not engine.view.state.containers()

                await eventually(none_left, timeout=30, what="every agent removed, in the engine and the view")
