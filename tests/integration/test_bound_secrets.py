"""Sealed secrets are bound to where they are sent: re-pointing a URL in the database opens nothing."""

from __future__ import annotations

import asyncio
import base64

import httpx
import psycopg
import pytest
from typer.testing import CliRunner

from orchestrator.cli import tenants as cli_tenants
from orchestrator.cli import app as cli_app
from orchestrator.tenants.credentials import _ad, _seal, unwrap_data_key
from orchestrator.tenants import CredentialsUnusable
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import ACME, AUTONOMITE, BETA, PLATFORM_HOST, World

EVIL = "evil.supabase.test"


def _sql(world: World, statement: str, *args: object) -> None:
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        conn.execute(statement, args)


async def test_changing_only_the_livekit_url_makes_the_secret_unusable(world: World) -> None:
    _sql(world, "update clients set livekit_url = 'wss://attacker.example' where id = %s", AUTONOMITE)
    store = world.store()
    with pytest.raises(CredentialsUnusable, match="cannot be decrypted"):
        await store.get_client(AUTONOMITE)
    assert (await store.get_client(BETA)).livekit.api_secret.get_secret_value() == world.secrets["beta_lk"]
    await store.aclose()


async def test_changing_only_the_supabase_url_sends_the_key_nowhere(world: World) -> None:
    _sql(world, "update clients set supabase_url = %s where id = %s", f"http://{EVIL}", ACME)
    store = world.store()
    with pytest.raises(CredentialsUnusable):
        client = await store.get_client(ACME)
        await store.get_agent(client, "farah")
    assert world.handler.for_host(EVIL) == []  # Acme's service key never left for the new host
    await store.aclose()


def _env(monkeypatch: pytest.MonkeyPatch, world: World, **extra: str) -> None:
    import json

    monkeypatch.setenv("ORCH_TENANT_STORE", "supabase")
    monkeypatch.setenv("ORCH_SUPABASE_URL", f"http://{PLATFORM_HOST}")
    monkeypatch.setenv("ORCH_SUPABASE_SERVICE_KEY", world.platform.key())
    monkeypatch.setenv("ORCH_MASTER_KEYS", json.dumps({k: base64.b64encode(v).decode() for k, v in world.keys.keys.items()}))
    monkeypatch.setenv("ORCH_MASTER_KEY_ID", world.keys.current)
    for k, v in extra.items():
        monkeypatch.setenv(k, v)
    from orchestrator.tenants.supabase_store import store_from_settings

    monkeypatch.setattr(cli_tenants, "_store", lambda s: store_from_settings(s, transport=httpx.MockTransport(world.handler)))


async def _client(world: World, client_id: str, **options: object):  # type: ignore[no-untyped-def]
    store = world.store(**options)
    try:
        return await store.get_client(client_id)
    finally:
        await store.aclose()


def test_set_credentials_with_a_new_url_reseals_for_it(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    _env(monkeypatch, world)
    result = CliRunner().invoke(cli_app, ["tenants", "set-credentials", BETA, "--livekit-url", "wss://beta-new.example"],
                                input="lk-beta-rotated-789\n")
    assert result.exit_code == 0, result.output
    client = asyncio.run(_client(world, BETA))
    assert (client.livekit.url, client.livekit.api_secret.get_secret_value()) == ("wss://beta-new.example", "lk-beta-rotated-789")


def test_unbound_rows_from_before_are_refused_until_rewrap_binds_them(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    # A row sealed the old way (associated data without the destination), as every existing row is.
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        wrapped = conn.execute("select data_key from clients where id = %s", (BETA,)).fetchone()[0]
        dk = unwrap_data_key(world.keys, client_id=BETA, wrapped=wrapped)
        legacy = "v1:" + _seal(dk, world.secrets["beta_lk"].encode(), _ad(BETA, "column:livekit_api_secret"))
        conn.execute("update clients set livekit_api_secret = %s where id = %s", (legacy, BETA))
    with pytest.raises(CredentialsUnusable):
        asyncio.run(_client(world, BETA))
    assert asyncio.run(_client(world, BETA, allow_unbound=True)).livekit.api_secret.get_secret_value() == world.secrets["beta_lk"]

    _env(monkeypatch, world, ORCH_ALLOW_UNBOUND_SECRETS="true")
    result = CliRunner().invoke(cli_app, ["tenants", "rewrap"])
    assert result.exit_code == 0, result.output
    assert "bound 1" in result.output
    assert asyncio.run(_client(world, BETA)).livekit.api_secret.get_secret_value() == world.secrets["beta_lk"]
