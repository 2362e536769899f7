"""`orchestrator tenants ...` and `orchestrator keys ...`: credentials, master-key rotation, cache, API keys."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import typer

from ..apikeys import add_to_keys_file, entry_yaml, generate, new_entry
from ..credentials import CredentialError, rewrap_data_key, wrapped_key_id
from ..settings import Settings
from .failures import USAGE, fail
from .http import Api

tenants_app = typer.Typer(help="Clients in the platform Supabase: credentials, master-key rotation, cache.", no_args_is_help=True)
keys_app = typer.Typer(help="Orchestrator API keys (stored hashed).", no_args_is_help=True)


def _supabase_settings() -> Settings:
    settings = Settings()
    if settings.tenant_store != "supabase":
        fail("this command needs ORCH_TENANT_STORE=supabase (and ORCH_SUPABASE_*, ORCH_MASTER_KEY*)", code=USAGE)
    return settings


def read_secret(label: str) -> str:
    """From a prompt with echo off, or one line of stdin when piped; never from argv (shell history, ps)."""
    if sys.stdin.isatty():
        value = typer.prompt(label, hide_input=True)
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value.strip():
        fail(f"{label}: empty", code=USAGE)
    return value


def _store(settings: Settings) -> Any:
    from ..tenants.supabase_store import store_from_settings

    return store_from_settings(settings)


async def set_credentials(store: Any, *, client_id: str, plain: dict[str, Any], secrets: dict[str, str]) -> str:
    """Seal and write one client's credentials; returns 'created' or 'updated'. Plaintext only in memory."""
    from ..tenants.records import client_changes
    from ..tenants.supabase_store import PlatformWriter

    writer = PlatformWriter(store)
    existing = await writer.existing_data_key(client_id)
    row = client_changes(store._master_keys, client_id=client_id, existing_data_key=existing, secrets=secrets, plain=plain)
    await writer.upsert(row, exists=existing is not None)
    return "updated" if existing else "created"


async def rewrap_all(store: Any) -> tuple[int, int]:
    """Re-wrap every client's data key under the current master key; returns (rewrapped, already current)."""
    from ..tenants.supabase_store import PlatformWriter

    writer = PlatformWriter(store)
    keys = store._master_keys
    done = current = 0
    for client_id, wrapped in await writer.data_keys():
        if wrapped_key_id(wrapped) == keys.current:
            current += 1
            continue
        await writer.set_data_key(client_id, rewrap_data_key(keys, client_id=client_id, wrapped=wrapped))
        done += 1
    await store.invalidate()
    return done, current


@tenants_app.command("set-credentials")
def set_credentials_cmd(
    client_id: str = typer.Argument(..., help="the client's id in the platform `clients` table"),
    name: str = typer.Option(None, help="display name (required for a new client)"),
    livekit_url: str = typer.Option(None, help="e.g. wss://tenant.livekit.cloud (required for a new client)"),
    livekit_api_key: str = typer.Option(None, help="the LiveKit API key (not secret; the secret is read from stdin/prompt)"),
    supabase_url: str = typer.Option(None, help="the client's own Supabase; omit to use the platform project"),
    platform_project: bool = typer.Option(False, "--platform-project", help="switch the client to the platform project"),
) -> None:
    """Add or rotate a client's credentials. Secrets are read from a hidden prompt or stdin, one per line:
    the LiveKit API secret, then (with --supabase-url) the client's Supabase service key."""
    settings = _supabase_settings()
    plain: dict[str, Any] = {k: v for k, v in {"name": name, "livekit_url": livekit_url, "livekit_api_key": livekit_api_key}.items() if v}
    secrets = {"livekit_api_secret": read_secret("LiveKit API secret")}
    if supabase_url:
        plain["supabase_url"] = supabase_url
        secrets["supabase_service_key"] = read_secret("client Supabase service key")
    elif platform_project:
        plain["supabase_url"] = plain["supabase_service_key"] = None

    async def run() -> str:
        store = _store(settings)
        try:
            return await set_credentials(store, client_id=client_id, plain=plain, secrets=secrets)
        finally:
            await store.aclose()

    try:
        outcome = asyncio.run(run())
    except (CredentialError, ValueError) as exc:
        typer.echo(f"cannot write credentials: {exc}", err=True)
        raise typer.Exit(1) from None
    except Exception as exc:  # OrchestratorError and friends: message only, never a secret
        typer.echo(f"cannot write credentials: {getattr(exc, 'message', type(exc).__name__)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"client {client_id}: credentials {outcome} (sealed under master key {settings.master_key_id})")


@tenants_app.command("rewrap")
def rewrap_cmd() -> None:
    """After adding a new master key as ORCH_MASTER_KEY_ID (old one still in ORCH_MASTER_KEYS): move every client to it."""
    settings = _supabase_settings()

    async def run() -> tuple[int, int]:
        store = _store(settings)
        try:
            return await rewrap_all(store)
        finally:
            await store.aclose()

    done, current = asyncio.run(run())
    typer.echo(f"re-wrapped {done} client data keys under {settings.master_key_id}; {current} were already current")


@tenants_app.command("invalidate")
def invalidate_cmd(
    client_id: str = typer.Option(None, "--client", "--client-id", help="only this client (default: every client)"),
    url: str = typer.Option(None, "--url", help="the running orchestrator (default ORCH_URL, else http://127.0.0.1:$ORCH_PORT)"),
    api_key: str = typer.Option(None, "--api-key", help="admin API key (default ORCH_API_KEY)", show_default=False),
) -> None:
    """Tell a running orchestrator to forget its cached clients/agents (POST /api/v1/admin/tenants/invalidate)."""
    _, body = Api.from_env(url=url, key=api_key, timeout_s=10).post("/api/v1/admin/tenants/invalidate", {"client_id": client_id})
    typer.echo(f"expired {body['expired']} cached entries")


@keys_app.command("new")
def keys_new(
    name: str = typer.Option(..., help="who the key is for, e.g. autonomite-dashboard"),
    client_id: str = typer.Option(None, "--client", "--client-id", help="bind the key to one client; omit for an admin key"),
    file: Path = typer.Option(None, "--file", help="add the hashed entry to this keys file (created when missing)"),
) -> None:
    """Generate an API key: the key goes to stderr once; its hashed entry goes into --file (or to stdout).

    `--file deploy/config/api-keys.yaml` is the way to build the file ORCH_API_KEYS_FILE names: it creates
    the file or adds to it, and the result is always a file `serve` loads."""
    key = generate()
    if file is not None:
        add_to_keys_file(file, new_entry(name=name, key=key, client_id=client_id))
        typer.echo(f"API key (shown once, store it now): {key}", err=True)
        typer.echo(f"added {'client' if client_id else 'admin'} key {name!r} to {file}", err=True)
        return
    typer.echo(f"API key (shown once, store it now): {key}", err=True)
    typer.echo(entry_yaml(name=name, key=key, client_id=client_id), nl=False)
