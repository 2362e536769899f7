"""The SQL migrations on a real PostgreSQL: row-level security between clients, and no secret in a dump."""

from __future__ import annotations

import subprocess

import psycopg
import pytest

from orchestrator.tenants.credentials import MasterKeys
from orchestrator.tenants import CredentialsUnusable
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.postgres import _as_postgres, _bindir
from devtools.supabase_world import ACME, AUTONOMITE, BETA, World, claims


def _as_client(dsn: str, client_id: str) -> psycopg.Connection:
    conn = psycopg.connect(dsn)
    conn.execute("set role authenticated")
    conn.execute("select set_config('request.jwt.claims', %s, false)", (claims(client_id),))
    return conn


_CATALOG = {
    "columns": "select table_schema, table_name, column_name, data_type, is_nullable, column_default"
               " from information_schema.columns where table_schema not in ('pg_catalog', 'information_schema')",
    "constraints": "select conrelid::regclass::text, conname, pg_get_constraintdef(oid) from pg_constraint"
                   " where connamespace = 'public'::regnamespace",
    "indexes": "select tablename, indexname, indexdef from pg_indexes where schemaname = 'public'",
    "policies": "select tablename, policyname, permissive, roles::text, cmd, qual, with_check from pg_policies",
    "row_security": "select relname, relrowsecurity, relforcerowsecurity from pg_class"
                    " where relkind = 'r' and relnamespace = 'public'::regnamespace",
    "grants": "select grantee, table_name, privilege_type from information_schema.role_table_grants"
              " where table_schema = 'public'",
    "column_grants": "select grantee, table_name, column_name, privilege_type from information_schema.column_privileges"
                     " where table_schema = 'public'",
    "triggers": "select event_object_table, trigger_name, action_timing, event_manipulation, action_statement"
                " from information_schema.triggers",
    "functions": "select p.proname, pg_get_functiondef(p.oid) from pg_proc p"
                 " where p.pronamespace = 'public'::regnamespace and p.prokind = 'f'",
}


def _snapshot(conn: psycopg.Connection) -> dict[str, object]:
    """Schema, policies, grants and every row of every table: what a migration could change."""
    found: dict[str, object] = {name: sorted(map(repr, conn.execute(sql).fetchall())) for name, sql in _CATALOG.items()}
    tables = [r[0] for r in conn.execute("select tablename from pg_tables where schemaname = 'public' order by 1")]
    for table in tables:
        found[f"rows:{table}"] = conn.execute(
            f'select count(*), md5(coalesce(string_agg(t::text, \',\' order by t::text), \'\')) from public."{table}" t'
        ).fetchone()
    return found


def test_migrations_are_idempotent(world: World) -> None:
    """A second run of every migration fails nowhere and changes nothing (schema, policies, grants, rows)."""
    from devtools.postgres import migration_files

    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        before = _snapshot(conn)
        assert any(k.startswith("rows:") for k in before) and before["policies"]  # the snapshot sees the schema
        for kind in ("platform", "client"):
            for f in migration_files(kind):
                conn.execute(f.read_text())
        after = _snapshot(conn)
    changed = {k: (before.get(k), after.get(k)) for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, f"a second run of the migrations changed: {sorted(changed)}"


def test_rls_keeps_one_clients_agents_from_another(world: World) -> None:
    with _as_client(world.platform.dsn, AUTONOMITE) as conn:
        slugs = {r[0] for r in conn.execute("select slug from agents")}
        assert slugs == {"clarence-coherence", "farah", "litebridge"}  # not Beta's beta-bot
        assert conn.execute("select count(*) from agent_configurations where client_id = %s", (BETA,)).fetchone() == (0,)
        with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("insert into agents (client_id, slug, name) values (%s, 'x', 'X')", (BETA,))
    with _as_client(world.platform.dsn, BETA) as conn:
        assert conn.execute("update agents set name = 'hijacked' where client_id = %s", (AUTONOMITE,)).rowcount == 0


def test_rls_on_clients_shows_own_row_and_no_ciphertext(world: World) -> None:
    with _as_client(world.platform.dsn, BETA) as conn:
        assert conn.execute("select id from clients").fetchall() == [(BETA,)]
    with _as_client(world.platform.dsn, BETA) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute("select livekit_api_secret from clients")
    with psycopg.connect(world.platform.dsn) as conn:
        conn.execute("set role anon")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("select id from clients")


def test_slug_rule_is_enforced_by_the_database(world: World) -> None:
    with psycopg.connect(world.platform.dsn) as conn, pytest.raises(psycopg.errors.CheckViolation):
        conn.execute("insert into agents (client_id, slug, name) values (%s, 'clarence_coherence', 'C')", (AUTONOMITE,))


def test_configuration_cannot_belong_to_another_clients_agent(world: World) -> None:
    with psycopg.connect(world.platform.dsn) as conn:
        agent_id = conn.execute("select id from agents where client_id = %s limit 1", (BETA,)).fetchone()[0]
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute("insert into agent_configurations (agent_id, client_id) values (%s, %s)", (agent_id, AUTONOMITE))


def test_stolen_dump_reveals_no_secret(world: World) -> None:
    db = world.platform.dsn.split("dbname=")[1]
    dump = subprocess.run(
        _as_postgres([str(_bindir() / "pg_dump"), "-h", "127.0.0.1", "-p", str(world.cluster.port), "-U", "postgres", "--data-only", db]),
        check=True, capture_output=True, text=True,
    ).stdout
    assert "COPY public.clients" in dump and AUTONOMITE in dump  # the rows are there...
    for name, secret in world.secrets.items():
        assert secret not in dump, name  # ...their secrets are not


async def test_moved_ciphertext_in_the_database_fails_to_decrypt(world: World) -> None:
    with psycopg.connect(world.platform.dsn, autocommit=True) as conn:
        conn.execute(  # an attacker with write access swaps Beta's secret into Autonomite's row
            "update clients set livekit_api_secret = (select livekit_api_secret from clients where id = %s) where id = %s",
            (BETA, AUTONOMITE),
        )
    store = world.store()
    with pytest.raises(CredentialsUnusable, match="cannot be decrypted") as info:
        await store.get_client(AUTONOMITE)
    assert world.secrets["beta_lk"] not in info.value.message
    assert (await store.get_client(BETA)).livekit.api_secret.get_secret_value() == world.secrets["beta_lk"]
    await store.aclose()


async def test_dump_plus_wrong_master_key_opens_nothing(world: World) -> None:
    import os

    store = world.store(master_keys=MasterKeys(keys={"k1": os.urandom(32)}, current="k1"))
    with pytest.raises(CredentialsUnusable, match="cannot be decrypted"):
        await store.get_client(ACME)
    await store.aclose()
