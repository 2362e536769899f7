"""`orchestrator serve | ps | ...`: the command line; human output by default, --json for scripts."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone

import typer

from .cli_tenants import keys_app, tenants_app
from .naming import Label
from .settings import Settings

app = typer.Typer(help="Runs LiveKit agents as one Docker container per (client, agent, room).", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")


def _settings() -> Settings:
    try:
        return Settings()
    except Exception as exc:  # pydantic's message names the bad variable; show it without a traceback
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(host: str = typer.Option(None, help="bind address (default ORCH_HOST)"), port: int = typer.Option(None)) -> None:
    """Run the HTTP API (trigger-agent, health, docs at /docs)."""
    import uvicorn

    from api.app import create_app

    from api.app import build_keyring

    settings = _settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    bind = host or settings.host
    if not build_keyring(settings).enabled and not is_loopback(bind):
        typer.echo(f"refusing to bind {bind}: no API keys are configured, so auth is disabled. Configure "
                   "ORCH_API_KEYS_FILE or ORCH_ADMIN_API_KEY, or bind 127.0.0.1.", err=True)
        raise typer.Exit(2)
    uvicorn.run(create_app(settings), host=bind, port=port or settings.port, log_level="info")


def is_loopback(host: str) -> bool:
    """Only loopback may serve without keys; `0.0.0.0`, `::` and names other than localhost may not."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


@app.command()
def ps(as_json: bool = typer.Option(False, "--json", help="machine-readable output")) -> None:
    """List this deployment's agent containers (like `docker ps`, with client, agent and room)."""
    from .runtime.docker import DockerRuntime

    settings = _settings()
    rows = asyncio.run(DockerRuntime(base_url=settings.docker_host).list_managed(scope=settings.scope))
    now = datetime.now(timezone.utc)
    out = [
        {
            "name": c.name, "status": c.status.value, "health": c.health.value,
            "client_id": c.labels.get(Label.CLIENT_ID, ""), "agent": c.labels.get(Label.AGENT_SLUG, ""),
            "room": c.labels.get(Label.ROOM, ""),
            "age_s": int((now - c.created_at).total_seconds()) if c.created_at else None,
        }
        for c in sorted(rows, key=lambda c: c.name)
    ]
    if as_json:
        typer.echo(json.dumps(out, indent=2))
        return
    cols = ["name", "status", "health", "client_id", "agent", "room", "age_s"]
    widths = {c: max([len(c)] + [len(str(r[c])) for r in out]) for c in cols}
    typer.echo("  ".join(c.upper().ljust(widths[c]) for c in cols))
    for r in out:
        typer.echo("  ".join(str(r[c]).ljust(widths[c]) for c in cols))


if __name__ == "__main__":
    app()
