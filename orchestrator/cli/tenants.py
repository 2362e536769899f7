"""`orchestrator tenants ...`: clients' credentials, master-key rotation, the running API's tenant cache."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import dataclass, field
from typing import Any

import typer

from orchestrator.tenants.credentials import CredentialError, is_bound, open_sealed, rewrap_data_key, seal, unwrap_data_key, wrapped_key_id
from orchestrator.tenants.records import SECRET_COLUMNS
from orchestrator.settings import Settings, SettingsProblem
from orchestrator.cli.http import Api

tenants_app = typer.Typer(help="Clients in the platform Supabase: credentials, master-key rotation, cache.", no_args_is_help=True,
                          rich_markup_mode=None)


def _settings() -> Settings:
    try:
        settings = Settings.load()
    except SettingsProblem as exc:  # one line naming the variables; never their values (secrets)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None
    return settings


def _supabase_settings() -> Settings:
    settings = _settings()
    if settings.tenant_store != "supabase":
        typer.echo("this command needs ORCH_TENANT_STORE=supabase (and ORCH_SUPABASE_*, ORCH_MASTER_KEY*)", err=True)
        raise typer.Exit(2)
    return settings


def read_secret(label: str) -> str:
    """From a prompt with echo off, or one line of stdin when piped; never from argv (shell history, ps)."""
    if sys.stdin.isatty():
        value = typer.prompt(label, hide_input=True)
    else:
        value = sys.stdin.readline().rstrip("\r\n")
    if not value.strip():
        typer.echo(f"{label}: empty", err=True)
        raise typer.Exit(2)
    return value


def _store(settings: Settings) -> Any:
    from orchestrator.tenants.supabase_store import store_from_settings

    return store_from_settings(settings)


async def set_credentials(store: Any, *, client_id: str, plain: dict[str, Any], secrets: dict[str, str]) -> str:
    """Seal and write one client's credentials; returns 'created' or 'updated'. Plaintext only in memory."""
    from orchestrator.tenants.records import client_changes
    from orchestrator.tenants.supabase_store import PlatformWriter

    writer = PlatformWriter(store)
    existing = await writer.existing(client_id)
    row = client_changes(store._master_keys, client_id=client_id, existing=existing, secrets=secrets, plain=plain)
    await writer.upsert(row, exists=existing is not None)
    return "updated" if existing else "created"


@dataclass
class RewrapReport:
    rewrapped: int = 0  # data keys moved to the current master key
    current: int = 0  # already under it
    bound: int = 0  # clients whose v1 secrets were re-sealed bound to their URLs
    unbound: list[str] = field(default_factory=list)  # clients still holding v1 secrets (not allowed to bind)
    failed: list[str] = field(default_factory=list)  # clients whose data key or secrets do not open
    verified: int = 0  # clients checked afterwards, all under the current key and bound


async def rewrap_all(store: Any, *, bind_unbound: bool) -> RewrapReport:
    """Every client (paged): data key under the current master key; with `bind_unbound`, v1 secrets re-sealed
    bound to the row's current URLs. Then every row is read again and checked, and the count compared."""
    from orchestrator.tenants.records import DESTINATION
    from orchestrator.tenants.supabase_store import PlatformWriter

    writer = PlatformWriter(store)
    keys = store._master_keys
    report = RewrapReport()
    rows = await writer.all_sealed()
    for row in rows:
        cid = row["id"]
        try:
            changes: dict[str, Any] = {}
            if wrapped_key_id(row["data_key"]) != keys.current:
                changes["data_key"] = rewrap_data_key(keys, client_id=cid, wrapped=row["data_key"])
            legacy = [c for c in SECRET_COLUMNS if row.get(c) and not is_bound(row[c])]
            if legacy and not bind_unbound:
                report.unbound.append(cid)
            elif legacy:
                dk = unwrap_data_key(keys, client_id=cid, wrapped=row["data_key"])
                for column in legacy:
                    dest = row.get(DESTINATION[column]) if column in DESTINATION else None
                    plain = open_sealed(dk, client_id=cid, column=column, token=row[column], destination=dest, allow_unbound=True)
                    changes[column] = seal(dk, client_id=cid, column=column, plaintext=plain, destination=dest)
                report.bound += 1
        except CredentialError:
            report.failed.append(cid)
            continue
        if changes:
            await writer.update(cid, changes)
        if "data_key" in changes:
            report.rewrapped += 1
        else:
            report.current += 1
    await store.invalidate()
    after = await writer.all_sealed()
    report.verified = sum(
        1 for r in after
        if wrapped_key_id(r["data_key"]) == keys.current and all(is_bound(r[c]) for c in SECRET_COLUMNS if r.get(c))
    )
    if len(after) < len(rows):
        report.failed.append(f"(listing shrank from {len(rows)} to {len(after)} rows)")
    return report


@tenants_app.command("set-credentials")
def set_credentials_cmd(
    client_id: str = typer.Argument(..., help="the client's id in the platform `clients` table"),
    name: str = typer.Option(None, help="display name (required for a new client)"),
    livekit_url: str = typer.Option(None, help="e.g. wss://tenant.livekit.cloud (required for a new client)"),
    livekit_api_key: str = typer.Option(None, help="the LiveKit API key (not secret; the secret is read from stdin/prompt)"),
    supabase_url: str = typer.Option(None, help="the client's own Supabase; omit to use the platform project"),
    platform_project: bool = typer.Option(False, "--platform-project", help="switch the client to the platform project"),
    llm_key: bool = typer.Option(False, "--llm-key", help="also read the client's own LLM API key (given to its agents only)"),
    no_llm_key: bool = typer.Option(False, "--no-llm-key", help="remove the client's own LLM key (the operator's fallback applies)"),
) -> None:
    """Add or rotate a client's credentials. Secrets are read from a hidden prompt or stdin, one per line:
    the LiveKit API secret, then (with --supabase-url) the client's Supabase service key, then (with
    --llm-key) the client's LLM API key."""
    settings = _supabase_settings()
    plain: dict[str, Any] = {k: v for k, v in {"name": name, "livekit_url": livekit_url, "livekit_api_key": livekit_api_key}.items() if v}
    secrets = {"livekit_api_secret": read_secret("LiveKit API secret")}
    if supabase_url:
        plain["supabase_url"] = supabase_url
        secrets["supabase_service_key"] = read_secret("client Supabase service key")
    elif platform_project:
        plain["supabase_url"] = plain["supabase_service_key"] = None
    if llm_key:
        secrets["llm_api_key"] = read_secret("client LLM API key")
    elif no_llm_key:
        plain["llm_api_key"] = None

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
    """Move every client to the current master key (ORCH_MASTER_KEY_ID; old ids still in ORCH_MASTER_KEYS) and,
    with ORCH_ALLOW_UNBOUND_SECRETS=true, bind secrets sealed before the upgrade to their rows' current URLs.
    Every row is read back and checked; any client left behind is named and the exit code is 1."""
    settings = _supabase_settings()

    async def run() -> RewrapReport:
        store = _store(settings)
        try:
            return await rewrap_all(store, bind_unbound=settings.allow_unbound_secrets)
        finally:
            await store.aclose()

    try:
        report = asyncio.run(run())
    except Exception as exc:  # OrchestratorError and friends: message only, never a secret
        typer.echo(f"rewrap failed: {getattr(exc, 'message', type(exc).__name__)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"re-wrapped {report.rewrapped} client data keys under {settings.master_key_id}; {report.current} were already current; "
        f"bound {report.bound} clients' secrets to their URLs; verified {report.verified} clients"
    )
    if report.unbound:
        typer.echo(f"{len(report.unbound)} clients still hold secrets not bound to their URL ({', '.join(report.unbound[:20])}): "
                   "check their livekit_url/supabase_url, then run again with ORCH_ALLOW_UNBOUND_SECRETS=true", err=True)
    if report.failed:
        typer.echo(f"{len(report.failed)} clients could not be opened ({', '.join(report.failed[:20])}); "
                   "re-enter their credentials with `orchestrator tenants set-credentials`", err=True)
    if report.unbound or report.failed:
        raise typer.Exit(1)


@tenants_app.command("invalidate")
def invalidate_cmd(
    client_id: str = typer.Option(None, "--client", "--client-id", help="only this client (default: every client)"),
    url: str = typer.Option(None, "--url", help="the running orchestrator (default ORCH_URL, else http://127.0.0.1:$ORCH_PORT)"),
    api_key: str = typer.Option(None, "--api-key", help="admin API key (default ORCH_API_KEY)", show_default=False),
) -> None:
    """Tell a running orchestrator to forget its cached clients/agents (POST /api/v1/admin/tenants/invalidate)."""
    _, body = Api.from_env(url=url, key=api_key, timeout_s=10).post("/api/v1/admin/tenants/invalidate", {"client_id": client_id})
    typer.echo(f"expired {body['expired']} cached entries")
