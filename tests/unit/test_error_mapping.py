"""Every domain error maps to its status, an actionable body, and Retry-After when temporary."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from api import errors
from orchestrator.core.errors import (
    Conflict,
    ContainerFailed,
    DependencyRejected,
    DependencyUnavailable,
    InvalidInput,
    LimitExceeded,
    NotFound,
    OrchestratorError,
    dependency_error,
)
from orchestrator.livekit.client import LiveKitRejected


class Body(BaseModel):
    n: int


def app_raising(exc: Exception) -> FastAPI:
    app = FastAPI()
    errors.install(app)

    @app.post("/boom")
    async def boom(body: Body) -> None:
        raise exc

    return app


async def call(exc: Exception, json: object = {"n": 1}) -> httpx.Response:
    transport = httpx.ASGITransport(app=app_raising(exc), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as c:
        return await c.post("/boom", json=json)


@pytest.mark.parametrize(
    ("exc", "status", "code", "retry_after"),
    [
        (InvalidInput("bad"), 422, "invalid_input", None),
        (NotFound("nope", details={"suggestions": ["farah"]}), 404, "not_found", None),
        (Conflict("taken"), 409, "conflict", None),
        (LimitExceeded("full", retry_after=7), 429, "limit_exceeded", "7"),
        (DependencyUnavailable("docker down", retry_after=3), 503, "dependency_unavailable", "3"),
        (ContainerFailed("did not start"), 502, "container_failed", "5"),
        (LiveKitRejected("bad key"), 502, "livekit_rejected", None),
    ],
)
async def test_domain_errors_map(exc: OrchestratorError, status: int, code: str, retry_after: str | None) -> None:
    resp = await call(exc)
    assert resp.status_code == status
    assert resp.json()["code"] == code
    assert resp.json()["detail"] == exc.message
    assert resp.headers.get("retry-after") == retry_after


async def test_suggestions_are_returned() -> None:
    resp = await call(NotFound("nope", details={"suggestions": ["farah"], "field": "agent_slug"}))
    assert resp.json()["suggestions"] == ["farah"]
    assert resp.json()["errors"] == [{"field": "agent_slug", "message": "nope"}]


async def test_validation_names_field_without_echoing_input() -> None:
    resp = await call(RuntimeError("unused"), json={"n": "x" * 10_000})
    assert resp.status_code == 422
    body = resp.json()
    assert body["errors"][0]["field"] == "n"
    assert "x" * 50 not in resp.text


async def test_unexpected_error_is_a_generic_500_without_details() -> None:
    resp = await call(RuntimeError("secret=hunter2"))
    assert resp.status_code == 500
    assert "hunter2" not in resp.text


@pytest.mark.parametrize(("status", "kind", "http"), [
    (None, DependencyUnavailable, 503), (408, DependencyUnavailable, 503), (429, DependencyUnavailable, 503),
    (500, DependencyUnavailable, 503), (503, DependencyUnavailable, 503),
    (400, DependencyRejected, 502), (401, DependencyRejected, 502), (404, DependencyRejected, 502),
])
def test_one_status_rule_for_every_adapter(status: int | None, kind: type, http: int) -> None:
    exc = dependency_error("docker", "Docker engine refused create: network x not found", status=status)
    assert type(exc) is kind and exc.status_code == http and exc.dependency == "docker"
    assert exc.retryable is (kind is DependencyUnavailable)
    assert exc.details.get("upstream_status") == status


def test_a_wrapped_dependency_error_keeps_its_dependency() -> None:
    """A cache that re-raises its source's outage `from` it still names the source's dependency."""
    try:
        try:
            raise DependencyUnavailable("Supabase unreachable", dependency="tenants")
        except DependencyUnavailable as source:
            raise DependencyUnavailable("cannot load client c1 and there is no cached copy") from source
    except DependencyUnavailable as wrapped:
        assert wrapped.dependency == "tenants"
    assert DependencyUnavailable("who knows").dependency == "unknown"


@pytest.mark.parametrize(("code", "status"), [
    (None, None), ("503", 503), ("PGRST000", 503), ("PGRST301", 401), ("PGRST116", 400),
    ("42501", 400), ("42P01", 400), ("08006", 503), ("40P01", 503), ("57014", 503),
])
def test_postgrest_codes_map_to_the_status_they_were_answered_with(code: str | None, status: int | None) -> None:
    from orchestrator.tenants.supabase_store import postgrest_status

    assert postgrest_status(code) == status
