"""The pool under faults on the real engine and LiveKit: a process that dies between a claim and its handover leaves
a claimed member that waits for an assignment forever; a restarted orchestrator must name it and converge."""

from __future__ import annotations

from collections.abc import Callable

import docker
import pytest
from livekit import api as lkapi

from devtools.agent_room import Participant, eventually
from devtools.livekit_server import LiveKitServer
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.pool import PooledDockerRuntime
from orchestrator.settings import Settings
from tests.conftest import app_client
from tests.integration.test_pool import body, idle, in_room, pool_settings  # noqa: F401 (a fixture)

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


class Killed(BaseException):
    """The process ends here: nothing after this line of the claim runs (no handover, no clean-up)."""


async def test_killed_between_claim_and_handover_converges(pool_settings: Callable[..., Settings], docker_client: docker.DockerClient,
                                                           livekit_server: LiveKitServer, scope: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    room = f"half-{scope}"
    settings = pool_settings(reconcile_enabled=True, reconcile_interval_s=1.0, agent_startup_timeout_s=5.0)
    async with app_client(settings) as c:
        assert (await c.post("/api/v1/trigger-agent", json=body(f"seed-{scope}"))).status_code == 201
        await idle(c, 2)

        async def die(*_: object, **__: object) -> None:
            raise Killed

        monkeypatch.setattr(PooledDockerRuntime, "hand_over", die)
        with pytest.raises(Killed):
            await c.post("/api/v1/trigger-agent", json={**body(room), "mode": "voice"})
        monkeypatch.undo()
        stuck = [x for x in docker_client.containers.list(filters={"label": [f"{Label.SCOPE}={scope}", rules.POOL]})
                 if rules.is_canonical(x.name) and room in x.name]
        assert len(stuck) == 1, [x.name for x in stuck]  # the half-state: claimed (renamed), never handed its room
    # A human waits in the room; a restarted orchestrator (nothing in memory) must give them an agent.
    token = (lkapi.AccessToken(livekit_server.api_key, livekit_server.api_secret).with_identity("alice")
             .with_grants(lkapi.VideoGrants(room_join=True, room=room)).to_jwt())
    async with Participant(livekit_server.url, token), app_client(settings) as c:
        await in_room(livekit_server, room, timeout=60)

        async def stuck_gone() -> bool | None:
            try:
                docker_client.containers.get(stuck[0].id)
            except docker.errors.NotFound:
                return True
            return None

        await eventually(stuck_gone, timeout=30, what="the never-handed-over member removed")

        # Named by the startup rule a cold agent that never joins gets: replaced, since a human waits. The action's
        # event follows its last step (the removal), so the engine's `destroy` can reach the feed first (seen in CI).
        seen: list[str] = []

        async def named() -> bool:
            seen[:] = [e["message"] for e in (await c.get("/api/v1/admin/events")).json()["events"]]
            return any("RestartAgent" in m and "did not join within 5 s" in m for m in seen)

        try:
            await eventually(named, timeout=10, what="a RestartAgent event naming the startup rule", interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the feed's last events: {seen[-10:]}") from None
