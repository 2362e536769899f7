"""Listings never stop silently at a row limit: a PostgREST server caps answers at its db-max-rows
(Supabase: 1,000) without saying so. Real PostgreSQL, the handler capping like Supabase."""

from __future__ import annotations

import os

import psycopg
import pytest

from orchestrator.cli.tenants import rewrap_all
from orchestrator.tenants.credentials import MasterKeys
from orchestrator.tenants.records import client_changes
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import AUTONOMITE, World

SUPABASE_MAX_ROWS = 1000


def _many_clients(world: World, n: int, *, livekit_api_key: str) -> list[str]:
    ids = [f"bulk-{i:05d}" for i in range(n)]
    rows = [client_changes(world.keys, client_id=cid, existing=None, secrets={"livekit_api_secret": "shared-project-secret"},
                           plain={"name": cid, "livekit_url": "ws://127.0.0.1:7880", "livekit_api_key": livekit_api_key}) for cid in ids]
    cols = list(rows[0])
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(f"insert into clients ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})", [[r[c] for c in cols] for r in rows])
    return ids


async def test_list_agent_slugs_pages_past_the_server_cap(world: World) -> None:
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        conn.execute("insert into agents (client_id, slug, name) select %s, 'bulk-' || lpad(g::text, 5, '0'), 'B' "
                     "from generate_series(1, 1050) g", (AUTONOMITE,))
    world.handler.max_rows = SUPABASE_MAX_ROWS
    store = world.store()
    slugs = await store.list_agent_slugs(await store.get_client(AUTONOMITE))
    assert len(slugs) == 1053 and "bulk-01050" in slugs and "litebridge" in slugs  # the planner would remove the rest
    await store.aclose()


async def test_clients_sharing_a_key_are_all_found(world: World) -> None:
    ids = _many_clients(world, 120, livekit_api_key="APIshared")  # more than any one fixed page of 100
    store = world.store()
    found = await store.clients_for_livekit_key("APIshared")
    assert sorted(c.id for c in found) == ids
    await store.aclose()


async def test_rewrap_moves_every_client_and_verifies_the_count(world: World) -> None:
    _many_clients(world, 60, livekit_api_key="APIbulk")
    world.handler.max_rows = 50  # a server capping lower than any page size asked for (as 1,000 caps 10,000)
    k2 = os.urandom(32)
    store = world.store(master_keys=MasterKeys(keys={**world.keys.keys, "k2": k2}, current="k2"))
    report = await rewrap_all(store, bind_unbound=False)
    await store.aclose()
    assert (report.rewrapped, report.verified, report.failed) == (63, 63, [])
    with psycopg.connect(world.platform.dsn) as conn:
        left = conn.execute("select count(*) from clients where data_key not like 'v1:k2:%'").fetchone()[0]
    assert left == 0  # the old master key can be retired: no client is left behind


async def test_a_listing_shorter_than_its_count_is_refused_not_trusted(world: World) -> None:
    import json

    import httpx

    from orchestrator.core.errors import DependencyUnavailable

    def short_answers(request: httpx.Request) -> httpx.Response:  # a server that loses rows but counts them
        response = world.handler(request)
        if request.url.path == "/rest/v1/agents" and request.method == "GET":
            rows = json.loads(response.content)[:-1]
            return httpx.Response(200, json=rows, headers={"Content-Range": response.headers["Content-Range"]}, request=request)
        return response

    from pydantic import SecretStr

    from orchestrator.tenants.supabase_store import SupabaseTenantStore
    from devtools.supabase_world import PLATFORM_HOST

    store = SupabaseTenantStore(url=f"http://{PLATFORM_HOST}", service_key=SecretStr(world.platform.key()), master_keys=world.keys,
                                retry=False, transport=httpx.MockTransport(short_answers))
    with pytest.raises(DependencyUnavailable, match="not trusting a partial list"):
        await store.list_agent_slugs(await store.get_client(AUTONOMITE))
    await store.aclose()
