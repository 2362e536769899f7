"""`orchestrator serve | ps | ...`: the command line; human output by default, --json for scripts."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone

import typer

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
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(create_app(settings), host=host or settings.host, port=port or settings.port, log_level="info")


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


@app.command()
def reconcile(
    once: bool = typer.Option(False, "--once", help="run one pass and exit (cron mode)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
) -> None:
    """Keep Docker equal to what should exist. --once prints a JSON summary; exit 0 ok, 1 some
    action failed (or part of LiveKit/tenants unobservable), 2 Docker could not be observed."""
    from api.app import build_tenants

    from .livekit import LiveKitGateway
    from .reconciler import Reconciler
    from .runtime.docker import DockerRuntime
    from .trigger import TriggerService

    settings = _settings()
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    async def main() -> int:
        runtime = DockerRuntime(
            base_url=settings.docker_host, pool_size=settings.docker_pool_size,
            timeout_s=settings.docker_timeout_s, retries=settings.docker_retries,
        )
        tenants = build_tenants(settings)
        livekit = LiveKitGateway()
        launcher = TriggerService(settings=settings, tenants=tenants, livekit=livekit, runtime=runtime)
        rec = Reconciler(settings=settings, runtime=runtime, tenants=tenants, livekit=livekit, launcher=launcher)
        try:
            if not once and not dry_run:
                await rec.run_forever()  # without HTTP: no webhooks, observation only
            report = await rec.run_once(dry_run=dry_run)
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return report.exit_code
        finally:
            await livekit.aclose()
            runtime.close()

    raise typer.Exit(asyncio.run(main()))


if __name__ == "__main__":
    app()
