"""The tenant cache on a real PostgreSQL: outages are per key and only for transport errors;
credential errors are permanent; an invalidation always reaches the source."""

from __future__ import annotations

import logging

import psycopg
import pytest

from orchestrator.core.errors import DependencyUnavailable, NotFound, PermanentError
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import AUTONOMITE, BETA, PLATFORM_HOST, World


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _sql(world: World, statement: str, *args: object) -> None:
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        conn.execute(statement, args)


async def test_one_undecryptable_row_does_not_freeze_the_others(world: World, caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    store = world.store(ttl_s=10, clock=clock)
    await store.get_client(AUTONOMITE)
    await store.get_client(BETA)
    # Autonomite's row is broken (a ciphertext moved in from Beta's row); Beta is then deactivated.
    _sql(world, "update clients set livekit_api_secret = (select livekit_api_secret from clients where id = %s) where id = %s", BETA, AUTONOMITE)
    _sql(world, "update clients set active = false where id = %s", BETA)
    clock.now += 11
    with caplog.at_level(logging.INFO):
        with pytest.raises(PermanentError) as info:
            await store.get_client(AUTONOMITE)
    assert not isinstance(info.value, DependencyUnavailable)  # a broken credential is not an outage
    assert "cannot be decrypted" in caplog.text and "unreachable" not in caplog.text
    assert world.secrets["beta_lk"] not in caplog.text and world.secrets["autonomite_lk"] not in caplog.text
    with pytest.raises(NotFound, match="deactivated"):  # Beta's deactivation takes effect at once
        await store.get_client(BETA)
    await store.aclose()


async def test_transport_outage_is_per_key(world: World) -> None:
    clock = Clock()
    store = world.store(ttl_s=10, clock=clock)
    await store.get_client(AUTONOMITE)
    await store.get_client(BETA)
    clock.now += 11
    world.handler.down.add(PLATFORM_HOST)
    assert (await store.get_client(AUTONOMITE)).id == AUTONOMITE  # stale copy bridges the outage
    world.handler.down.clear()
    _sql(world, "update clients set active = false where id = %s", BETA)
    with pytest.raises(NotFound, match="deactivated"):  # Autonomite's failure put no other key in outage mode
        await store.get_client(BETA)
    await store.aclose()


async def test_invalidate_rereads_even_during_an_outage_backoff(world: World) -> None:
    clock = Clock()
    store = world.store(ttl_s=10, clock=clock)
    await store.get_client(BETA)
    clock.now += 11
    world.handler.down.add(PLATFORM_HOST)
    assert (await store.get_client(BETA)).id == BETA  # served stale; the key is now in back-off
    world.handler.down.clear()
    _sql(world, "update clients set active = false where id = %s", BETA)
    sent = len(world.handler.requests)
    await store.invalidate(BETA)
    with pytest.raises(NotFound, match="deactivated"):
        await store.get_client(BETA)
    assert len(world.handler.requests) == sent + 1
    await store.aclose()
