"""Contract tests: supabase-py's real requests, answered by a PostgREST-style handler over the real PostgreSQL."""

from __future__ import annotations

import logging

import pytest

from orchestrator.core.errors import DependencyUnavailable, NotFound
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import (
    ACME,
    ACME_FARAH_ID,
    ACME_HOST,
    AUTONOMITE,
    BETA,
    CLARENCE_ID,
    PLATFORM_HOST,
    World,
)

AGENT_SELECT = "id,slug,name,agent_configurations(instructions,voice,greeting,model,image,memory,cpus,pids)"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _params(request) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    return list(request.url.params.multi_items())


async def test_client_on_platform_project_by_slug(world: World) -> None:
    store = world.store()
    client = await store.get_client(AUTONOMITE)
    agent = await store.get_agent(client, "clarence-coherence")

    assert client.name == "Autonomite"
    assert client.livekit.api_secret.get_secret_value() == world.secrets["autonomite_lk"]
    assert (agent.id, agent.slug, agent.instructions, agent.greeting) == (
        CLARENCE_ID, "clarence-coherence", "You are Clarence.", "Hello, I'm Clarence.")
    assert agent.resources.memory == "256m" and agent.resources.cpus == 0.5

    first, second = world.handler.requests
    assert (first.method, first.url.host, first.url.path) == ("GET", PLATFORM_HOST, "/rest/v1/clients")
    assert _params(first) == [
        ("select", "id,name,active,livekit_url,livekit_api_key,livekit_api_secret,supabase_url,supabase_service_key,llm_api_key,data_key"),
        ("id", f"eq.{AUTONOMITE}"), ("limit", "1"),
    ]
    # The shared project is queried with the platform key and filtered by client: Beta's agents stay out.
    assert (second.url.host, second.url.path) == (PLATFORM_HOST, "/rest/v1/agents")
    assert _params(second) == [("select", AGENT_SELECT), ("client_id", f"eq.{AUTONOMITE}"), ("slug", "eq.clarence-coherence"), ("limit", "1")]
    for r in (first, second):
        assert r.headers["apikey"].count(".") == 2  # a JWT the handler verified with the platform secret
        assert r.headers["authorization"] == f"Bearer {r.headers['apikey']}"
        assert r.headers["accept-profile"] == "public"
        assert r.headers["x-client-info"].startswith("supabase-py/")
    await store.aclose()


async def test_client_with_own_project_by_id(world: World) -> None:
    store = world.store()
    client = await store.get_client(ACME)
    agent = await store.get_agent_by_id(client, ACME_FARAH_ID)

    assert (agent.name, agent.voice, agent.instructions) == ("Acme Farah", "shimmer", "Acme's receptionist.")
    lookup = world.handler.for_host(ACME_HOST)
    assert len(lookup) == 1
    assert lookup[0].url.path == "/rest/v1/agents"
    assert _params(lookup[0]) == [("select", AGENT_SELECT), ("client_id", "eq.acme"), ("id", f"eq.{ACME_FARAH_ID}"), ("limit", "1")]
    # Acme's own project is called with Acme's own (decrypted) service key, never the platform's.
    assert lookup[0].headers["apikey"] == world.secrets["acme_sb"]
    assert lookup[0].headers["authorization"] == f"Bearer {world.secrets['acme_sb']}"
    await store.aclose()


async def test_same_slug_in_two_clients_resolves_per_client(world: World) -> None:
    store = world.store()
    acme_farah = await store.get_agent(await store.get_client(ACME), "farah")
    auto_farah = await store.get_agent(await store.get_client(AUTONOMITE), "farah")
    assert acme_farah.name == "Acme Farah" and auto_farah.name == "Farah"
    with pytest.raises(NotFound):  # Beta's agent is in the shared project but not Autonomite's
        await store.get_agent(await store.get_client(AUTONOMITE), "beta-bot")
    await store.aclose()


async def test_unknown_client_is_404(world: World) -> None:
    store = world.store()
    with pytest.raises(NotFound, match="client 'nobody' not found"):
        await store.get_client("nobody")
    await store.aclose()


async def test_unknown_agent_is_404_with_suggestions(world: World) -> None:
    store = world.store()
    client = await store.get_client(AUTONOMITE)
    with pytest.raises(NotFound) as info:
        await store.get_agent(client, "clarence-coherance")
    assert info.value.details["suggestions"] == ["clarence-coherence"]
    slugs = world.handler.requests[-1]
    assert _params(slugs) == [("select", "slug"), ("client_id", f"eq.{AUTONOMITE}"), ("order", "slug.asc"), ("limit", "1000")]
    assert slugs.headers["prefer"] == "count=exact"  # the count tells a capped answer from a complete one
    with pytest.raises(NotFound, match="agent id"):
        await store.get_agent_by_id(client, "not-a-uuid")  # refused before any request
    with pytest.raises(NotFound, match="agent id"):
        await store.get_agent_by_id(client, ACME_FARAH_ID)  # another client's agent
    await store.aclose()


async def test_supabase_down_with_warm_cache_keeps_serving_and_logs(world: World, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = world.store(ttl_s=10, clock=clock)
    client = await store.get_client(AUTONOMITE)
    await store.get_agent(client, "farah")
    world.handler.down.add(PLATFORM_HOST)
    clock.now += 60  # past the TTL: the store must try Supabase, fail, and fall back
    sent = len(world.handler.requests)
    with caplog.at_level(logging.WARNING):
        assert (await store.get_client(AUTONOMITE)).id == AUTONOMITE
        assert (await store.get_agent(client, "farah")).slug == "farah"
    assert len(world.handler.requests) == sent + 2  # it did try, once each (retry disabled here)
    assert "serving the cached client" in caplog.text and "ConnectError" in caplog.text
    assert world.secrets["autonomite_lk"] not in caplog.text
    await store.aclose()


async def test_supabase_down_with_cold_cache_is_503_with_reason(world: World) -> None:
    store = world.store()
    world.handler.down.add(PLATFORM_HOST)
    with pytest.raises(DependencyUnavailable) as info:
        await store.get_client(AUTONOMITE)
    assert info.value.status_code == 503
    assert "no cached copy" in info.value.message and "unreachable" in info.value.message
    world.handler.down.clear()
    world.handler.slow.add(PLATFORM_HOST)
    with pytest.raises(DependencyUnavailable, match="within 2 s"):
        await store.get_client(AUTONOMITE)
    await store.aclose()


async def test_client_project_down_with_cold_cache_is_503(world: World) -> None:
    store = world.store()
    client = await store.get_client(ACME)
    world.handler.down.add(ACME_HOST)
    with pytest.raises(DependencyUnavailable, match="agent 'farah' of client acme"):
        await store.get_agent(client, "farah")
    await store.aclose()


async def test_supabase_py_retries_gets_itself_and_nothing_is_stacked(world: World) -> None:
    store = world.store(retry=True)
    world.handler.fail_with[PLATFORM_HOST] = [503]
    assert (await store.get_client(BETA)).name == "Beta"
    first, second = world.handler.requests
    assert "x-retry-count" not in first.headers and second.headers["x-retry-count"] == "1"
    assert len(world.handler.requests) == 2
    await store.aclose()


async def test_invalidate_rereads_and_ttl_caches(world: World) -> None:
    clock = Clock()
    store = world.store(ttl_s=30, clock=clock)
    await store.get_client(BETA)
    await store.get_client(BETA)
    assert len(world.handler.requests) == 1  # fresh: served from the cache
    assert await store.invalidate(BETA) == 1
    await store.get_client(BETA)
    assert len(world.handler.requests) == 2
    # Invalidated entries still bridge an outage.
    await store.invalidate()
    world.handler.down.add(PLATFORM_HOST)
    assert (await store.get_client(BETA)).name == "Beta"
    await store.aclose()
