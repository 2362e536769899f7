"""The API's published surface: stable operation ids, a typed answer for every route, our error body for the
framework's own 404/405, /docs without a CDN, and no internal references in the schema. No engine needed:
the app is built but its lifespan never runs."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import httpx
import pytest

from orchestrator.settings import Settings

# Renaming one of these breaks generated clients: change it on purpose, here too.
OPERATION_IDS = {
    "healthz", "livez", "readyz", "trigger_agent", "spawn_agent", "livekit_webhook", "metrics_endpoint", "dashboard",
    "list_rooms", "admin_stats", "close_room", "reconcile_now", "list_containers", "invalidate_tenant_cache",
    "list_events", "stream_events", "dispatch_state", "pool_state",
    "list_client_rooms", "get_client_room", "wait_for_joined", "stop_agent", "close_client_room",
    "list_starts", "start_progress",
}
UNTYPED_OK = {"metrics_endpoint", "stream_events", "dashboard", "start_progress"}  # Prometheus text, an SSE stream, an HTML page


@pytest.fixture(scope="module")
def app():  # type: ignore[no-untyped-def]
    from api.app import create_app

    return create_app(Settings(reconcile_enabled=False, usage_sampling_enabled=False, docker_events_enabled=False))


@pytest.fixture
def client(app) -> Iterator[httpx.AsyncClient]:  # type: ignore[no-untyped-def]
    yield httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1")


def operations(app):  # type: ignore[no-untyped-def]
    for path, methods in app.openapi()["paths"].items():
        for method, op in methods.items():
            yield path, method, op


def test_operation_ids_are_the_stable_set(app) -> None:  # type: ignore[no-untyped-def]
    ids = [op["operationId"] for _, _, op in operations(app)]
    assert len(ids) == len(set(ids)) and set(ids) == OPERATION_IDS


def test_every_route_declares_a_typed_answer_and_our_error_body(app) -> None:  # type: ignore[no-untyped-def]
    for path, method, op in operations(app):
        ok = next(v for k, v in op["responses"].items() if k.startswith("2"))
        if op["operationId"] not in UNTYPED_OK:
            schema = ok["content"]["application/json"]["schema"]
            assert "$ref" in schema, f"{method} {path} has no response model"
        for status, answer in op["responses"].items():
            if status[0] in "45" and not (path in ("/healthz", "/livez", "/readyz") and status == "503"):  # health answers its own body
                assert answer["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)


def test_schema_has_examples_and_no_internal_references(app) -> None:  # type: ignore[no-untyped-def]
    text = json.dumps(app.openapi())
    assert not re.search(r"(?i)\b(seed|issue) \d", text)
    schemas = app.openapi()["components"]["schemas"]
    for name in ("TriggerAgentResponse", "ClientRoomOut", "AgentStateOut", "ContainerRow", "RoomRow"):
        assert schemas[name].get("examples") or any("examples" in p for p in schemas[name]["properties"].values()), name


async def test_unknown_path_and_method_get_our_error_body(client: httpx.AsyncClient) -> None:
    missing = await client.get("/api/v1/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found" and "/docs" in missing.json()["detail"]
    wrong = await client.put("/healthz")
    assert wrong.status_code == 405 and wrong.json()["code"] == "method_not_allowed"
    garbage = await client.post("/api/v1/trigger-agent", content=b"\xff not json", headers={"Content-Type": "application/json"})
    assert garbage.status_code in (400, 422) and garbage.json()["code"] == "invalid_input"


async def test_docs_page_loads_nothing_from_elsewhere(client: httpx.AsyncClient) -> None:
    page = await client.get("/docs")
    assert page.status_code == 200, "run scripts/fetch-api-docs-assets (scripts/provision does)"
    sources = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert sources and all(s.startswith("/") for s in sources), sources
    for s in sources:
        assert (await client.get(s)).status_code == 200, s
    assert (await client.get("/redoc")).status_code == 404
