"""`orchestrator serve | ps | ...`: the command line; human output by default, --json for scripts."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timezone

import typer

from . import logs
from .naming import Label
from .settings import Settings

app = typer.Typer(help="Runs LiveKit agents as one Docker container per (client, agent, room).", no_args_is_help=True)


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

    settings = _settings()
    logs.configure(fmt=settings.log_format, level=settings.log_level)
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_config=None)


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
