"""Webhooks for a LiveKit key several tenants share: one broken row does not fail them all, and nothing
an unauthenticated caller sees names a tenant or a master key. Real app, real PostgreSQL, real signatures."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable

import psycopg
from livekit import api

from orchestrator.settings import Settings
from tests.conftest import app_client
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import PLATFORM_HOST, World, _insert_client

HOOK = "/api/v1/livekit/webhook"
KEY, SECRET = "APIsharedproject", "shared-project-secret-0123456789abcdef"


def _signed(body: str) -> str:
    digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
    return api.AccessToken(KEY, SECRET).with_sha256(digest).to_jwt()


def _event(room: str) -> str:
    return json.dumps({"event": "room_started", "id": f"EV_{room}", "createdAt": "1700000000", "room": {"name": room}})


def _shared_clients(world: World) -> None:
    for cid in ("shared-good", "shared-broken"):
        _insert_client(world.platform.dsn, world.keys, client_id=cid, name=cid, lk_secret=SECRET, livekit_api_key=KEY)
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:  # wrapped under a master key this deployment lacks
        conn.execute("update clients set data_key = 'v1:retired-key-7:' || split_part(data_key, ':', 3) where id = 'shared-broken'")


async def test_one_undecryptable_row_does_not_fail_the_shared_key(world: World, make_settings: Callable[..., Settings]) -> None:
    _shared_clients(world)
    async with app_client(make_settings(), tenants=world.store()) as client:
        body = _event("room-a")
        r = await client.post(HOOK, content=body, headers={"Authorization": _signed(body)})
    assert r.status_code == 200, r.text
    assert r.json()["event"] == "room_started"


async def test_what_unauthenticated_callers_see_names_no_tenant_or_key(world: World, make_settings: Callable[..., Settings]) -> None:
    _shared_clients(world)
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:  # now every tenant of the key is unusable
        conn.execute("update clients set data_key = 'v1:retired-key-7:' || split_part(data_key, ':', 3) where id = 'shared-good'")
    async with app_client(make_settings(), tenants=world.store()) as client:
        body = _event("room-b")
        broken = await client.post(HOOK, content=body, headers={"Authorization": _signed(body)})
    assert broken.status_code == 401, broken.text  # nobody of ours can verify it: the one generic refusal
    for leak in ("shared-good", "shared-broken", "retired-key-7", "k1", PLATFORM_HOST):
        assert leak not in broken.text, (leak, broken.text)


async def test_cold_outage_is_a_generic_503(world: World, make_settings: Callable[..., Settings]) -> None:
    _shared_clients(world)
    world.handler.down.add(PLATFORM_HOST)
    async with app_client(make_settings(), tenants=world.store()) as client:
        body = _event("room-c")
        r = await client.post(HOOK, content=body, headers={"Authorization": _signed(body)})
    assert r.status_code == 503 and r.headers["retry-after"].isdigit()
    for leak in ("shared-good", "shared-broken", "retired-key-7", PLATFORM_HOST, "Supabase"):
        assert leak not in r.text, (leak, r.text)
