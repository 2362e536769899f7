"""Two deployments (scopes) on one Docker engine: neither sees, reuses nor stops the other's containers.

TODO(reconciler branch): the reconcile half — run both deployments' reconcilers (run_once) on the
same engine and assert each only stops/removes its own scope's containers.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

import docker
import httpx

from orchestrator.naming import Label
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID
from tests.support.docker_helpers import remove_scope


async def _trigger(settings: Settings, body: dict[str, str]) -> httpx.Response:
    from api.app import create_app

    app = create_app(settings)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://o") as client:
            return await client.post("/api/v1/trigger-agent", json=body)


async def test_two_scopes_on_one_engine_stay_apart(make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient) -> None:
    other_scope = f"test-{secrets.token_hex(4)}"
    room = f"shared-{secrets.token_hex(3)}"
    try:
        a = make_settings()
        b = make_settings(scope=other_scope)
        ra = await _trigger(a, {"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        rb = await _trigger(b, {"agent_slug": "farah", "user_id": "u", "client_id": OTHER_CLIENT_ID, "room_name": room})
        assert ra.status_code == rb.status_code == 200, (ra.text, rb.text)

        runtime = DockerRuntime(base_url=None)
        seen_a = await runtime.list_managed(scope=scope)
        seen_b = await runtime.list_managed(scope=other_scope)
        assert [c.name for c in seen_a] == [ra.json()["container_name"]]
        assert [c.name for c in seen_b] == [rb.json()["container_name"]]
        assert {c.labels[Label.SCOPE] for c in seen_a} == {scope}

        # Deployment B asked for A's exact (client, agent, room): a clear 409, and A's container untouched.
        before = docker_client.containers.get(ra.json()["container_name"])
        clash = await _trigger(b, {"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        assert clash.status_code == 409 and scope in clash.json()["detail"]
        after = docker_client.containers.get(ra.json()["container_name"])
        assert (after.id, after.status, after.attrs["RestartCount"]) == (before.id, "running", before.attrs["RestartCount"])
        assert len(await runtime.list_managed(scope=other_scope)) == 1
    finally:
        remove_scope(docker_client, other_scope)
