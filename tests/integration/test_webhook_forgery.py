"""Forged LiveKit webhooks against the real app and a real PostgreSQL: bounded cost, one generic 401."""

from __future__ import annotations

import base64
import gc
import json
import tracemalloc
from collections.abc import Callable

import jwt

from orchestrator.settings import Settings
from tests.conftest import app_client
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import AUTONOMITE, PLATFORM_HOST, World

HOOK = "/api/v1/livekit/webhook"
BODY = json.dumps({"event": "room_started", "id": "EV_forged", "room": {"name": "r"}})


def _forged(iss: str) -> str:
    return jwt.encode({"iss": iss, "sha256": "x", "exp": 9999999999}, "not-the-secret-but-long-enough-for-hs256-xx", algorithm="HS256")


def _unverified(payload: str) -> str:
    return "e30." + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=") + ".sig"


async def test_forged_issuers_cost_bounded_queries_and_memory(world: World, make_settings: Callable[..., Settings]) -> None:
    store = world.store()
    async with app_client(make_settings(), tenants=store) as client:
        for i in range(50):  # warm-up: imports, first allocations, the first directory load
            await client.post(HOOK, content=BODY, headers={"Authorization": _forged(f"APIwarm{i}")})
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        sent = len(world.handler.for_host(PLATFORM_HOST))
        statuses = set()
        for i in range(2000):
            r = await client.post(HOOK, content=BODY, headers={"Authorization": _forged(f"APIforged{i:05d}")})
            statuses.add(r.status_code)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        queries = len(world.handler.for_host(PLATFORM_HOST)) - sent
    grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"2000 forged webhooks: {queries} platform queries, {grown / 1024:.0f} KiB retained")
    assert statuses == {401}
    assert queries <= 4, queries  # was one query per forged issuer
    assert grown < 1_000_000, grown  # was ~11 MB: one cache entry per forged issuer


async def test_malformed_issuer_is_refused_before_any_lookup(world: World, make_settings: Callable[..., Settings]) -> None:
    async with app_client(make_settings(), tenants=world.store()) as client:
        for iss in ("", " ", "x" * 500, "key with spaces", "ключ", "a\u202eb", "a/b?c=d"):
            r = await client.post(HOOK, content=BODY, headers={"Authorization": _forged(iss)})
            assert r.status_code == 401, iss
        for token in ("not-a-jwt", _unverified('{"iss": 5}'), _unverified("[1]"), _unverified("\xff")):
            assert (await client.post(HOOK, content=BODY, headers={"Authorization": token})).status_code == 401
    assert world.handler.for_host(PLATFORM_HOST) == []


async def test_every_webhook_failure_has_the_same_answer(world: World, make_settings: Callable[..., Settings]) -> None:
    known_key = f"key-{AUTONOMITE[:6]}"  # a tenant's real LiveKit API key, signed with the wrong secret
    async with app_client(make_settings(), tenants=world.store()) as client:
        answers = [
            await client.post(HOOK, content=BODY),
            await client.post(HOOK, content=BODY, headers={"Authorization": "garbage"}),
            await client.post(HOOK, content=BODY, headers={"Authorization": _forged("APInobody")}),
            await client.post(HOOK, content=BODY, headers={"Authorization": _forged(known_key)}),
        ]
    assert {r.status_code for r in answers} == {401}
    assert len({r.text for r in answers}) == 1, [r.text for r in answers]  # nothing tells which keys are tenants'
