"""A platform Supabase project and one client's own project, on a real PostgreSQL, seeded like the user's.

Autonomite shares the platform project (seed 004); Acme has its own project. Secrets are written
exactly as the CLI writes them (sealed rows), through the real PostgreSQL.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import SecretStr

from orchestrator.tenants.credentials import MasterKeys
from orchestrator.tenants.records import client_changes
from orchestrator.tenants.supabase_store import SupabaseTenantStore

from devtools.postgres import PostgresCluster
from devtools.postgrest import PostgrestHandler, Project

AUTONOMITE = "df91fd06-816f-4273-a903-5a4861277040"
BETA = "beta-shared"
ACME = "acme"
PLATFORM_HOST = "platform.supabase.test"
ACME_HOST = "acme.supabase.test"
CLARENCE_ID = "3f0c2a9e-7b1d-4c55-9d0e-1a2b3c4d5e6f"
ACME_FARAH_ID = "0d9e8f7a-6b5c-4d3e-8f2a-1b0c9d8e7f6a"


def random_master_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@dataclass
class World:
    cluster: PostgresCluster
    platform: Project
    acme: Project
    keys: MasterKeys
    handler: PostgrestHandler
    secrets: dict[str, str] = field(default_factory=dict)  # plaintext, for asserting they never leak

    def store(self, **options: Any) -> SupabaseTenantStore:
        import httpx

        return SupabaseTenantStore(
            url=f"http://{PLATFORM_HOST}", service_key=SecretStr(self.platform.key()),
            transport=httpx.MockTransport(self.handler),
            **{"master_keys": self.keys, "retry": False, "timeout_s": 2.0, **options},
        )


def _insert_client(dsn: str, keys: MasterKeys, *, client_id: str, name: str, lk_secret: str,
                   own_url: str | None = None, own_key: str | None = None, llm_key: str | None = None,
                   livekit_api_key: str | None = None) -> None:
    secrets_ = {"livekit_api_secret": lk_secret}
    if own_key:
        secrets_["supabase_service_key"] = own_key
    if llm_key:
        secrets_["llm_api_key"] = llm_key
    row = client_changes(
        keys, client_id=client_id, existing=None, secrets=secrets_,
        plain={"name": name, "livekit_url": "ws://127.0.0.1:7880", "livekit_api_key": livekit_api_key or f"key-{client_id[:6]}", "supabase_url": own_url},
    )
    cols = list(row)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            f"insert into clients ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})", [row[c] for c in cols]
        )


def _insert_agent(dsn: str, *, client_id: str, slug: str, name: str, agent_id: str | None = None, **config: Any) -> str:
    agent_id = agent_id or str(uuid.uuid4())
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("insert into agents (id, client_id, slug, name) values (%s, %s, %s, %s)", (agent_id, client_id, slug, name))
        if config:
            cols = ["agent_id", "client_id", *config]
            conn.execute(
                f"insert into agent_configurations ({', '.join(cols)}) values ({', '.join(['%s'] * len(cols))})",
                [agent_id, client_id, *config.values()],
            )
    return agent_id


def build_world(cluster: PostgresCluster) -> World:
    tag = secrets.token_hex(3)
    platform = Project(dsn=cluster.create_database(f"platform_{tag}", kinds=["platform", "client"]))
    acme = Project(dsn=cluster.create_database(f"acme_{tag}", kinds=["client"]))
    keys = MasterKeys(keys={"k1": base64.b64decode(random_master_key())}, current="k1")
    world = World(cluster=cluster, platform=platform, acme=acme, keys=keys,
                  handler=PostgrestHandler({PLATFORM_HOST: platform, ACME_HOST: acme}))
    world.secrets = {
        "autonomite_lk": "lk-secret-autonomite-" + secrets.token_hex(16),
        "beta_lk": "lk-secret-beta-" + secrets.token_hex(16),
        "acme_lk": "lk-secret-acme-" + secrets.token_hex(16),
        "acme_sb": acme.key("service_role"),
    }
    _insert_client(platform.dsn, keys, client_id=AUTONOMITE, name="Autonomite", lk_secret=world.secrets["autonomite_lk"])
    _insert_client(platform.dsn, keys, client_id=BETA, name="Beta", lk_secret=world.secrets["beta_lk"])
    _insert_client(platform.dsn, keys, client_id=ACME, name="Acme", lk_secret=world.secrets["acme_lk"],
                   own_url=f"http://{ACME_HOST}", own_key=world.secrets["acme_sb"])
    _insert_agent(platform.dsn, client_id=AUTONOMITE, slug="clarence-coherence", name="Clarence Coherence", agent_id=CLARENCE_ID,
                  instructions="You are Clarence.", voice="alloy", greeting="Hello, I'm Clarence.", memory="256m", cpus=0.5)
    _insert_agent(platform.dsn, client_id=AUTONOMITE, slug="farah", name="Farah")
    _insert_agent(platform.dsn, client_id=AUTONOMITE, slug="litebridge", name="Litebridge", voice="echo")
    _insert_agent(platform.dsn, client_id=BETA, slug="beta-bot", name="Beta Bot")
    _insert_agent(acme.dsn, client_id=ACME, slug="farah", name="Acme Farah", agent_id=ACME_FARAH_ID,
                  instructions="Acme's receptionist.", voice="shimmer")
    return world


def claims(client_id: str) -> str:
    return json.dumps({"role": "authenticated", "client_id": client_id})
