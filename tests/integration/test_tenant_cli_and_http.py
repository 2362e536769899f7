"""The tenants CLI (credentials from stdin, master-key rotation) and the Supabase store behind the HTTP API."""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import psycopg
import pytest
import yaml
from typer.testing import CliRunner

from orchestrator.cli import tenants as cli_tenants
from orchestrator.cli import app as cli_app
from orchestrator.tenants.credentials import MasterKeys
from orchestrator.settings import Settings
from tests.conftest import app_client
from devtools.pg_fixtures import pg_cluster, world  # noqa: F401  (fixtures)
from devtools.supabase_world import AUTONOMITE, PLATFORM_HOST, World

ROOT = Path(__file__).resolve().parents[2]


def _env(monkeypatch: pytest.MonkeyPatch, world: World, keys: dict[str, bytes], current: str) -> None:
    import json

    monkeypatch.setenv("ORCH_TENANT_STORE", "supabase")
    monkeypatch.setenv("ORCH_SUPABASE_URL", f"http://{PLATFORM_HOST}")
    monkeypatch.setenv("ORCH_SUPABASE_SERVICE_KEY", world.platform.key())
    monkeypatch.setenv("ORCH_MASTER_KEYS", json.dumps({k: base64.b64encode(v).decode() for k, v in keys.items()}))
    monkeypatch.setenv("ORCH_MASTER_KEY_ID", current)
    # The store as the CLI builds it from settings, with the test transport (the only seam).
    from orchestrator.tenants.supabase_store import store_from_settings

    monkeypatch.setattr(cli_tenants, "_store", lambda s: store_from_settings(s, transport=httpx.MockTransport(world.handler)))


def test_set_credentials_reads_secrets_from_stdin_and_stores_only_ciphertext(
    world: World, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    _env(monkeypatch, world, world.keys.keys, world.keys.current)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli_app, [
        "tenants", "set-credentials", "newco", "--name", "NewCo", "--livekit-url", "wss://newco.example",
        "--livekit-api-key", "APInewco",
    ], input="lk-secret-newco-123\n")
    assert result.exit_code == 0, result.output
    assert "created" in result.output and "lk-secret-newco-123" not in result.output
    assert not any("lk-secret-newco-123" in p.read_text(errors="ignore") for p in tmp_path.rglob("*") if p.is_file())
    with psycopg.connect(world.platform.dsn) as conn:
        row = conn.execute("select livekit_api_secret, data_key from clients where id = 'newco'").fetchone()
    assert row[0].startswith("v2:") and "lk-secret-newco-123" not in row[0] and row[1].startswith("v1:k1:")
    assert asyncio.run(_secret_of(world.store(), "newco")) == "lk-secret-newco-123"

    # Rotating only the LiveKit secret keeps the data key, so nothing else needs re-entering.
    result = CliRunner().invoke(cli_app, ["tenants", "set-credentials", "newco"], input="lk-secret-newco-456\n")
    assert result.exit_code == 0 and "updated" in result.output
    assert asyncio.run(_secret_of(world.store(), "newco")) == "lk-secret-newco-456"


async def _secret_of(store, client_id: str) -> str:  # type: ignore[no-untyped-def]
    try:
        return (await store.get_client(client_id)).livekit.api_secret.get_secret_value()
    finally:
        await store.aclose()


def test_master_key_rotation_via_cli_keeps_every_client_readable(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    k2 = os.urandom(32)
    _env(monkeypatch, world, {**world.keys.keys, "k2": k2}, "k2")
    result = CliRunner().invoke(cli_app, ["tenants", "rewrap"])
    assert result.exit_code == 0, result.output
    assert "re-wrapped 3 client data keys under k2" in result.output
    with psycopg.connect(world.platform.dsn) as conn:
        assert {r[0].split(":")[1] for r in conn.execute("select data_key from clients")} == {"k2"}
    # The old master key can now be retired: k2 alone opens every client.
    only_k2 = MasterKeys(keys={"k2": k2}, current="k2")
    assert asyncio.run(_secret_of(world.store(master_keys=only_k2), AUTONOMITE)) == world.secrets["autonomite_lk"]
    assert asyncio.run(_secret_of(world.store(master_keys=only_k2), "acme")) == world.secrets["acme_lk"]


async def test_http_trigger_on_cold_cache_outage_is_503_with_reason(world: World, make_settings: Callable[..., Settings]) -> None:
    world.handler.down.add(PLATFORM_HOST)
    async with app_client(make_settings(), tenants=world.store()) as client:
        r = await client.post("/api/v1/trigger-agent", json={"agent_slug": "clarence_coherence", "user_id": "u", "client_id": AUTONOMITE})
    assert r.status_code == 503 and r.headers["retry-after"].isdigit()
    assert r.json()["code"] == "dependency_unavailable" and "no cached copy" in r.json()["detail"]


async def test_http_invalidate_reaches_the_supabase_store(world: World, make_settings: Callable[..., Settings]) -> None:
    store = world.store()
    await store.get_client(AUTONOMITE)
    async with app_client(make_settings(), tenants=store) as client:
        r = await client.post("/api/v1/admin/tenants/invalidate", json={"client_id": AUTONOMITE})
    assert r.json() == {"expired": 1}


def test_keys_new_prints_the_key_once_and_only_a_hash_to_stdout() -> None:
    result = CliRunner().invoke(cli_app, ["keys", "new", "--name", "dash", "--client-id", AUTONOMITE])
    assert result.exit_code == 0
    entry = yaml.safe_load(result.stdout)[0]
    key = result.stderr.split(": ")[-1].strip()
    assert entry["role"] == "client" and entry["client_id"] == AUTONOMITE and key not in result.stdout
    from orchestrator.core.apikeys import KeyEntry

    assert entry["hash"].startswith("hmac-sha256$") and KeyEntry.model_validate(entry).matches(key)


def test_docker_compose_file_is_valid_and_scoped(tmp_path: Path) -> None:
    env = tmp_path / "tenant.env"
    env.write_text((ROOT / "deploy" / "tenant.env.example").read_text())
    base = {**os.environ, "ORCH_ENV_FILE": str(env)}
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                         env={**base, "ORCH_SCOPE": "tenant-a"}, capture_output=True, text=True, check=True).stdout
    services = yaml.safe_load(out)["services"]
    assert set(services) == {"orchestrator", "reconciler", "livekit"}  # livekit: only with --profile livekit
    assert re.fullmatch(r"livekit/livekit-server:v\d+\.\d+\.\d+", services["livekit"]["image"])  # pinned
    assert services["livekit"]["profiles"] == ["livekit"]
    hook = yaml.safe_load((ROOT / "deploy" / "livekit.yaml").read_text())["webhook"]
    assert hook["urls"] == ["http://127.0.0.1:8000/api/v1/livekit/webhook"]
    for svc in (services["orchestrator"], services["reconciler"]):
        assert svc["environment"]["ORCH_SCOPE"] == "tenant-a"
        assert "/var/run/docker.sock:/var/run/docker.sock:rw" in svc["volumes"]
    # Without ORCH_SCOPE the file still reads (so `docker-compose -p … down` needs no variable), and the scope the
    # containers then get is empty, which the orchestrator refuses at start with one line naming the variable.
    bare = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    out = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                         env=bare, capture_output=True, text=True, check=True).stdout
    unscoped = yaml.safe_load(out)["services"]["orchestrator"]["environment"]["ORCH_SCOPE"]
    assert unscoped in ("", None)
    refused = subprocess.run([sys.executable, "-m", "orchestrator.cli", "config"], env={**bare, "ORCH_SCOPE": unscoped or ""},
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and refused.stderr.startswith("orchestrator: invalid settings: ORCH_SCOPE: "), refused.stderr
