"""What the trigger route answers before (and instead of) touching any engine: bad bodies, typed
dependency failures, the counters they move. The real app over the fake tier; no Docker, no LiveKit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from orchestrator.core.errors import DependencyRejected, DependencyUnavailable
from devtools.fakes import fake_app


def body(room: str, **kw: object) -> dict[str, object]:
    return {"agent_slug": "clarence_coherence", "mode": "voice", "room_name": room,
            "user_id": "test-user-123", "client_id": "c1", **kw}


BAD_BODIES = [
    ({}, "agent_slug"),
    ({**body("r"), "mode": "video"}, "mode"),
    ({**body("r"), "agent_slug": "x" * 10_000}, "agent_slug"),
    ({**body("r"), "agent_slug": "../x"}, "agent_slug"),
    ({**body("r"), "agent_slug": "ünïcødé"}, "agent_slug"),
    ({**body("r"), "agent_slug": ""}, "agent_slug"),
    ({**body("r"), "agent_slug": "___"}, "agent_slug"),
    ({**body("r"), "user_id": ""}, "user_id"),
    ({**body("r"), "client_id": ""}, "client_id"),
    ({**body("r"), "room_name": ""}, "room_name"),
    ({**body("r"), "room_name": "../../etc"}, "room_name"),
    ({**body("r"), "room_name": "x" * 500}, "room_name"),
    ({**body("r"), "user_id": "a\nb"}, "user_id"),
    ({**body("r"), "user_id": "agent-clarence-coherence"}, "user_id"),  # would kick the agent
    ({**body("r"), "agent_slug": 42}, "agent_slug"),
    ({**body("r"), "extra": 1}, "extra"),
]


@pytest.fixture(scope="module")
async def shared() -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """One app for the cases that must never reach the engine (each checks that nothing was made)."""
    async with fake_app() as pair:
        yield pair


@pytest.mark.parametrize(("payload", "field"), BAD_BODIES)
async def test_bad_bodies_are_422_naming_the_field_and_create_nothing(
    shared: tuple[httpx.AsyncClient, Any], payload: dict[str, object], field: str
) -> None:
    api, engine = shared
    resp = await api.post("/api/v1/trigger-agent", json=payload)
    assert resp.status_code == 422, resp.text
    assert field in {e["field"] for e in resp.json()["errors"]}
    assert len(resp.text) < 2000  # never echoes a 10 kB input back
    assert engine.runtime.containers == {} and engine.livekit.calls == []


@pytest.mark.parametrize("raw", ["not json", "[1,2]", "null", ""])
async def test_malformed_json_is_422(shared: tuple[httpx.AsyncClient, Any], raw: str) -> None:
    resp = await shared[0].post("/api/v1/trigger-agent", content=raw, headers={"content-type": "application/json"})
    assert resp.status_code == 422


async def test_a_good_body_reaches_the_engine() -> None:
    async with fake_app() as (api, engine):
        resp = await api.post("/api/v1/trigger-agent", json=body("r1"))
    assert resp.status_code == 201, resp.text  # created; a reuse answers 200
    assert resp.json()["status"] == "created" and list(engine.runtime.containers) == [resp.json()["container_name"]]


def counted(engine, dependency: str) -> float:  # type: ignore[no-untyped-def]
    return engine.metrics.registry.get_sample_value("orchestrator_dependency_errors_total", {"dependency": dependency}) or 0


@pytest.mark.parametrize(("part", "error", "status"), [
    ("tenants", DependencyUnavailable("Supabase unreachable for client c1", dependency="tenants"), 503),
    ("livekit", DependencyUnavailable("LiveKit at ws://x is unreachable", dependency="livekit"), 503),
    ("livekit", DependencyRejected("LiveKit refused create_room", dependency="livekit"), 502),
])
async def test_a_dependency_failure_is_counted_against_that_dependency(part: str, error: Exception, status: int) -> None:
    async with fake_app() as (api, engine):
        (engine.tenants if part == "tenants" else engine.livekit).fail = error
        trig = await api.post("/api/v1/trigger-agent", json=body("r1"))
        spawn = await api.post("/api/v1/agents/agent-farah/spawn", json={"client_id": "c1"})
        assert (trig.status_code, spawn.status_code) == (status, status)
        assert counted(engine, part) == 2  # the trigger and the spawn route both count it
        assert sum(counted(engine, d) for d in ("docker", "livekit", "tenants")) == 2
