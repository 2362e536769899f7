"""Every domain error maps to its status, an actionable body, and Retry-After when temporary."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from api import errors
from orchestrator.errors import (
    Conflict,
    ContainerFailed,
    DependencyUnavailable,
    InvalidInput,
    LimitExceeded,
    NotFound,
    OrchestratorError,
)
from orchestrator.livekit import LiveKitRejected


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
