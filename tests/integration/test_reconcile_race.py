"""A trigger that replaces a container while a reconcile pass is removing the old one keeps its new container."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import docker
import pytest

from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, app_client
from devtools.agent_room import view_sees
from devtools.docker_helpers import scoped

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


class RacingRuntime(DockerRuntime):
    """Runs `interleave` once, at the executor's first step (it inspects the doomed container: was its end abnormal?)."""

    interleave: Callable[[], Awaitable[None]] | None = None

    async def get(self, name: str):  # type: ignore[no-untyped-def]
        step, self.interleave = self.interleave, None
        if step is not None:
            await step()
        return await super().get(name)


async def test_reconciler_never_removes_the_container_a_trigger_just_made(
    make_settings: Callable[..., Settings], docker_client: docker.DockerClient, scope: str
) -> None:
    runtime = RacingRuntime()
    body = {"agent_slug": "farah", "room_name": "race-reconcile", "user_id": "u", "client_id": CLIENT_ID}
    async with app_client(make_settings(), runtime=runtime) as c:
        old = (await c.post("/api/v1/trigger-agent", json=body)).json()
        docker_client.containers.get(old["container_id"]).stop(timeout=2)  # exited: the next pass replaces it
        await view_sees(c, old["container_id"], status="exited")
        replaced: dict[str, str] = {}

        async def trigger_meanwhile() -> None:
            replaced.update((await c.post("/api/v1/trigger-agent", json=body)).json())

        runtime.interleave = trigger_meanwhile
        report = (await c.post("/api/v1/admin/reconcile")).json()

    assert replaced["status"] == "created" and replaced["container_id"] != old["container_id"]
    removal = [a for a in report["actions"] if a.get("name") == old["container_name"]]
    assert removal and all(a["ok"] for a in removal), report
    survivors = scoped(docker_client, scope)
    assert [(c.id, c.status) for c in survivors] == [(replaced["container_id"], "running")]
