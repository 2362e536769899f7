"""Two deployments (scopes) on one Docker engine: neither sees, reuses nor stops the other's containers."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import docker
import httpx
from livekit import api as lkapi

from orchestrator.rules.naming import Label
from orchestrator.runtime.docker.runtime import DockerRuntime
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client
from devtools.docker_helpers import remove_scope, scoped
from devtools.livekit_server import LiveKitServer


async def _trigger(settings: Settings, body: dict[str, str]) -> httpx.Response:
    async with app_client(settings) as client:
        return await client.post("/api/v1/trigger-agent", json=body)


async def _reconcile(settings: Settings) -> dict[str, object]:
    async with app_client(settings) as client:
        resp = await client.post("/api/v1/admin/reconcile")
        assert resp.status_code == 200, resp.text
        return resp.json()


async def test_two_scopes_on_one_engine_stay_apart(make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient) -> None:
    other_scope = f"test-{secrets.token_hex(4)}"
    room = f"shared-{secrets.token_hex(3)}"
    try:
        a = make_settings()
        b = make_settings(scope=other_scope)
        ra = await _trigger(a, {"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        # Both clients share one LiveKit project: one room name is one client's (test_room_ownership).
        rb = await _trigger(b, {"agent_slug": "farah", "user_id": "u", "client_id": OTHER_CLIENT_ID, "room_name": room + "-b"})
        assert ra.status_code == rb.status_code == 201, (ra.text, rb.text)

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


async def test_each_deployments_reconciler_removes_only_its_own(
    make_settings: Callable[..., Settings], scope: str, docker_client: docker.DockerClient, livekit_server: LiveKitServer
) -> None:
    """Both deployments' containers become removable (their LiveKit room is deleted); each pass touches its own only."""
    other_scope = f"test-{secrets.token_hex(4)}"
    room = f"doomed-{secrets.token_hex(3)}"
    a, b = make_settings(), make_settings(scope=other_scope)
    try:
        ra = await _trigger(a, {"agent_slug": "farah", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        rb = await _trigger(b, {"agent_slug": "litebridge", "user_id": "u", "client_id": CLIENT_ID, "room_name": room})
        assert ra.status_code == rb.status_code == 201, (ra.text, rb.text)
        async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
            await lk.room.delete_room(lkapi.DeleteRoomRequest(room=room))

        report_a = await _reconcile(a)
        names_a = {act.get("name") for act in report_a["actions"]}  # type: ignore[union-attr]
        assert ra.json()["container_name"] in names_a and rb.json()["container_name"] not in names_a
        assert scoped(docker_client, scope) == []
        assert [c.name for c in scoped(docker_client, other_scope)] == [rb.json()["container_name"]]

        report_b = await _reconcile(b)
        assert {act.get("name") for act in report_b["actions"]} >= {rb.json()["container_name"]}  # type: ignore[union-attr]
        assert scoped(docker_client, other_scope) == []
    finally:
        remove_scope(docker_client, other_scope)
