"""API keys on every protected endpoint (401/403), the auth-disabled local default, and the spawn flow."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest

from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID, OTHER_CLIENT_ID, app_client

# /dashboard is a static page without data: everything it shows comes from the admin endpoints below.
OPEN = {("get", "/healthz"), ("get", "/livez"), ("get", "/readyz"), ("post", "/api/v1/livekit/webhook"), ("get", "/dashboard")}
# One representative, valid request per protected endpoint; a new route without a row here fails the coverage test.
PROTECTED = {
    ("post", "/api/v1/trigger-agent"): {"agent_slug": "farah", "user_id": "u1", "client_id": CLIENT_ID, "room_name": "auth-room"},
    ("post", "/api/v1/agents/{agent_id}/spawn"): {"client_id": CLIENT_ID},
    ("post", "/api/v1/admin/tenants/invalidate"): {},
    ("get", "/api/v1/admin/rooms"): None,
    ("get", "/api/v1/admin/stats"): None,
    ("get", "/api/v1/admin/containers"): None,
    ("post", "/api/v1/admin/rooms/{client_id}/{room}/close"): None,
    ("post", "/api/v1/admin/reconcile"): None,
    ("get", "/metrics"): None,
    ("get", "/api/v1/admin/events"): None,
    ("get", "/api/v1/admin/events/stream"): None,
    ("get", "/api/v1/admin/dispatch"): None,
    # A client's own rooms: `?client_id=` names the client (see _url), so another client's key is a 403.
    ("get", "/api/v1/rooms"): None,
    ("get", "/api/v1/rooms/{room}"): None,
    ("get", "/api/v1/rooms/{room}/wait"): None,
    ("delete", "/api/v1/rooms/{room}/agents/{agent_slug}"): None,
    ("post", "/api/v1/rooms/{room}/close"): None,
    ("get", "/api/v1/rooms/{room}/progress"): None,
    ("get", "/api/v1/starts"): None,
    ("get", "/api/v1/admin/pool"): None,
}
ADMIN_ONLY = {k for k in PROTECTED if k[1].startswith("/api/v1/admin/") or k[1] == "/metrics"}


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    made = {"admin": generate(), "own": generate(), "other": generate()}
    text = "keys:\n" + entry_yaml(name="ops", key=made["admin"], client_id=None)
    text += entry_yaml(name="autonomite", key=made["own"], client_id=CLIENT_ID)
    text += entry_yaml(name="acme", key=made["other"], client_id=OTHER_CLIENT_ID)
    (tmp_path / "keys.yaml").write_text(text)
    for key in made.values():
        assert key not in text  # only hashes on disk
    return made


@pytest.fixture
async def secured(make_settings: Callable[..., Settings], tmp_path: Path, keys: dict[str, str]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings(api_keys_file=tmp_path / "keys.yaml")) as c:
        yield c


@pytest.fixture
async def open_api(make_settings: Callable[..., Settings]) -> AsyncIterator[httpx.AsyncClient]:
    async with app_client(make_settings()) as c:
        yield c


def _url(path: str) -> str:
    url = path.replace("{agent_id}", "agent-farah").replace("{client_id}", CLIENT_ID).replace("{room}", "auth-room")
    url = url.replace("{agent_slug}", "farah")
    if path.endswith("/progress"):  # a stream: the shortest wait it accepts
        return f"{url}?client_id={CLIENT_ID}&timeout_s=1"
    if path.startswith(("/api/v1/rooms", "/api/v1/starts")):  # client-scoped: `?client_id=` names whose
        return f"{url}?client_id={CLIENT_ID}&timeout_s=0"
    return url


def test_every_route_is_either_open_or_covered(make_settings: Callable[..., Settings], tmp_path: Path, keys: dict[str, str]) -> None:
    from api.app import create_app

    schema = create_app(make_settings(api_keys_file=tmp_path / "keys.yaml")).openapi()
    routes = {(m, p) for p, ops in schema["paths"].items() for m in ops}
    assert routes - OPEN == set(PROTECTED), "add the new route to PROTECTED (and give it an auth dependency)"


@pytest.mark.parametrize(("method", "path"), sorted(PROTECTED))
@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer ak_wrong"}, {"X-API-Key": "nope"}, {"Authorization": "Basic eDp5"}])
async def test_missing_or_wrong_key_is_401(secured: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]) -> None:
    r = await secured.request(method, _url(path), json=PROTECTED[(method, path)], headers=headers)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"].startswith("Bearer")
    assert r.json()["code"] == "unauthorized"


@pytest.mark.parametrize(("method", "path"), sorted(PROTECTED))
async def test_other_clients_key_is_403(secured: httpx.AsyncClient, keys: dict[str, str], method: str, path: str) -> None:
    r = await secured.request(method, _url(path), json=PROTECTED[(method, path)], headers={"X-API-Key": keys["other"]})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "forbidden"


async def test_client_key_cannot_reach_admin_endpoints(secured: httpx.AsyncClient, keys: dict[str, str]) -> None:
    for method, path in ADMIN_ONLY:
        r = await secured.request(method, path, json={}, headers={"Authorization": f"Bearer {keys['own']}"})
        assert r.status_code == 403
    r = await secured.post("/api/v1/admin/tenants/invalidate", json={}, headers={"Authorization": f"Bearer {keys['admin']}"})
    assert r.status_code == 200 and r.json() == {"expired": 0}


async def test_bad_input_with_no_key_is_401_not_422(secured: httpx.AsyncClient) -> None:
    r = await secured.post("/api/v1/trigger-agent", json={"agent_slug": "%%%"})
    assert r.status_code == 401  # callers without a key learn nothing about the body rules


async def test_health_needs_no_key(secured: httpx.AsyncClient) -> None:
    assert (await secured.get("/healthz")).status_code == 200


async def test_no_keys_configured_means_auth_disabled(open_api: httpx.AsyncClient) -> None:
    r = await open_api.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "user_id": "u", "client_id": "nobody"})
    assert r.status_code == 404  # reached the tenant store: no key was needed (seed 004's curl)


async def test_admin_key_needs_client_id_to_spawn(secured: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await secured.post("/api/v1/agents/agent-farah/spawn", json={}, headers={"X-API-Key": keys["admin"]})
    assert r.status_code == 422 and r.json()["errors"][0]["field"] == "client_id"


async def test_spawn_unknown_agent_id_is_404(secured: httpx.AsyncClient, keys: dict[str, str]) -> None:
    r = await secured.post("/api/v1/agents/agent-nope/spawn", headers={"X-API-Key": keys["own"]})
    assert r.status_code == 404 and r.json()["errors"][0]["field"] == "agent_id"
    # Another client's agent id is not found for this key's client either (no cross-tenant lookups).
    r = await secured.post("/api/v1/agents/agent-acme-farah/spawn", headers={"X-API-Key": keys["own"]})
    assert r.status_code == 404


async def test_spawn_by_id_with_own_client_key(  # type: ignore[no-untyped-def]
    secured: httpx.AsyncClient, keys: dict[str, str], scope: str, docker_client, livekit_server
) -> None:
    import json

    from livekit import api as lkapi

    r = await secured.post("/api/v1/agents/agent-clarence/spawn", headers={"Authorization": f"Bearer {keys['own']}"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert re.fullmatch(r"agent-agent-clarence-[0-9a-f]{8}", body["room_name"])
    assert body["agent"] == {"id": "agent-clarence", "slug": "clarence-coherence", "name": "Clarence Coherence"}
    assert body["livekit_url"].startswith("ws://127.0.0.1:") and body["status"] == "created"
    # The container is real, carries the room and scope labels, and the token names the room.
    c = docker_client.containers.get(body["container_name"])
    assert c.labels["agent-orchestrator.scope"] == scope and c.labels["agent-orchestrator.room"] == body["room_name"]
    claims = lkapi.TokenVerifier(livekit_server.api_key, livekit_server.api_secret).verify(body["token"])
    assert claims.video.room == body["room_name"] and claims.video.room_join
    # The room carries the agent id in its metadata (seed 000's spawner reads it from there).
    async with lkapi.LiveKitAPI(livekit_server.http_url, livekit_server.api_key, livekit_server.api_secret) as lk:
        rooms = await lk.room.list_rooms(lkapi.ListRoomsRequest(names=[body["room_name"]]))
    assert json.loads(rooms.rooms[0].metadata)["agent_id"] == "agent-clarence"


async def test_repeated_wrong_keys_from_one_source_are_throttled(
    make_settings: Callable[..., Settings], tmp_path: Path, keys: dict[str, str]
) -> None:
    from api.app import create_app

    app = create_app(make_settings(api_keys_file=tmp_path / "keys.yaml"))
    async with app.router.lifespan_context(app):
        def client(source: str) -> httpx.AsyncClient:
            return httpx.AsyncClient(transport=httpx.ASGITransport(app=app, client=(source, 4000)), base_url="http://orchestrator")

        async with client("203.0.113.7") as guesser, client("203.0.113.8") as bystander:
            codes = [(await guesser.get("/api/v1/admin/containers", headers={"X-API-Key": generate()})).status_code for _ in range(40)]
            assert codes[0] == 401 and codes[-1] == 429, codes
            blocked = await guesser.get("/api/v1/admin/containers", headers={"X-API-Key": generate()})
            assert blocked.status_code == 429 and int(blocked.headers["retry-after"]) > 0
            # Another source is unaffected, and a missing key (nothing guessed) is a plain 401.
            assert (await bystander.get("/api/v1/admin/containers", headers={"X-API-Key": generate()})).status_code == 401
            assert (await bystander.get("/api/v1/admin/containers", headers={"X-API-Key": keys["admin"]})).status_code == 200
