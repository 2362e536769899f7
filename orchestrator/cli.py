"""`orchestrator serve | ps | ...`: the command line; human output by default, --json for scripts."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
import json

import typer

from .clock import utcnow
from .logs import configure as configure_logging
from .cli_tenants import keys_app, tenants_app
from .isolation import api_reachable_by_agents
from .naming import Label
from .settings import Settings, SettingsProblem

app = typer.Typer(help="Runs LiveKit agents as one Docker container per (client, agent, room).", no_args_is_help=True)
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")


def _settings() -> Settings:
    try:
        return Settings.load()
    except SettingsProblem as exc:  # one line naming the variables; never their values (secrets)
        typer.echo(str(exc), err=True)
        raise typer.Exit(2) from None


@app.command()
def serve(host: str = typer.Option(None, help="bind address (default ORCH_HOST)"), port: int = typer.Option(None)) -> None:
    """Run the HTTP API (trigger-agent, health, docs at /docs)."""
    from api.app import create_app
    from api.serving import run

    settings = _settings()
    configure_logging(fmt=settings.log_format, level=settings.log_level)
    bind = host or settings.host
    application = create_app(settings)
    if not application.state.api_keys.enabled and not is_loopback(bind):
        typer.echo(f"refusing to bind {bind}: no API keys are configured, so auth is disabled. Configure "
                   "ORCH_API_KEYS_FILE or ORCH_ADMIN_API_KEY, or bind 127.0.0.1.", err=True)
        raise typer.Exit(2)
    agent_network = application.state.engine.networks.configured
    if not application.state.api_keys.enabled and api_reachable_by_agents(bind, agent_network=agent_network):
        typer.echo(f"refusing to serve on {bind} without API keys: agent containers run on the host network "
                   "(ORCH_AGENT_NETWORK=host) and reach the host's loopback, so any agent could call this API. "
                   "Configure ORCH_API_KEYS_FILE or ORCH_ADMIN_API_KEY, or leave ORCH_AGENT_NETWORK unset.", err=True)
        raise typer.Exit(2)
    run(application, host=bind, port=port or settings.port)


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
def network() -> None:
    """Make sure the agents' network exists (as `serve` does at start) and print it as JSON.

    `scripts/dev` reads the gateway from it to bind its LiveKit server where agents can reach it."""
    from .agent_networks import AgentNetworks
    from .runtime.factory import runtime_from_settings

    settings = _settings()
    runtime = runtime_from_settings(settings)
    try:
        net = asyncio.run(AgentNetworks(settings=settings, provider=runtime).for_client(None))
    finally:
        runtime.close()
    typer.echo(json.dumps({"name": net.name, "subnet": net.subnet, "gateway": net.gateway, "bridge": net.bridge}))


@app.command()
def ps(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    url: str = typer.Option("http://127.0.0.1:8000", envvar="ORCH_URL", help="the running orchestrator (for room state)"),
    api_key: str = typer.Option(None, envvar="ORCH_API_KEY", help="admin API key, when the server requires one"),
    docker_only: bool = typer.Option(False, "--docker-only", help="do not ask the orchestrator API"),
) -> None:
    """List this deployment's agent containers, like `docker ps` with client, agent, room state, humans, health, age.

    Room state, humans, CPU and memory come from the orchestrator API (ORCH_URL) when it answers; otherwise
    the list comes from Docker alone (labels) and says so on stderr.
    """
    from .ps_view import API_COLUMNS, DOCKER_COLUMNS, table, with_node

    rows, note = (None, "not asked (--docker-only)") if docker_only else _from_api(url, api_key)
    if rows is None:
        if not docker_only:
            typer.echo(f"orchestrator API at {url}: {note}; showing Docker's view only", err=True)
        rows, columns = _from_docker(), DOCKER_COLUMNS
    else:
        columns = API_COLUMNS
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(table(rows, with_node(columns, rows)))


def _api_get(url: str, api_key: str | None, path: str) -> dict:  # type: ignore[type-arg]
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    resp = httpx.get(f"{url}{path}", headers=headers, timeout=5)
    if resp.status_code in (401, 403):
        raise PermissionError(resp.json().get("detail", resp.text))
    resp.raise_for_status()
    return resp.json()


def _from_api(url: str, api_key: str | None) -> tuple[list[dict] | None, str]:  # type: ignore[type-arg]
    import httpx

    from .ps_view import join_rooms

    try:
        containers = _api_get(url, api_key, "/api/v1/admin/containers")["containers"]
        rooms = _api_get(url, api_key, "/api/v1/admin/rooms")["rooms"]
    except PermissionError as exc:
        return None, f"refused ({exc}); set ORCH_API_KEY to an admin key"
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return None, f"not reachable ({type(exc).__name__})"
    return join_rooms(containers, rooms), "ok"


def _from_docker() -> list[dict]:  # type: ignore[type-arg]
    from .ps_view import container_row
    from .runtime.factory import runtime_from_settings

    settings = _settings()
    runtime = runtime_from_settings(settings)
    try:
        found = asyncio.run(runtime.list_managed(scope=settings.scope))
    finally:
        runtime.close()
    now = utcnow()
    return [container_row(c, now=now) for c in sorted(found, key=lambda c: c.name)]


@app.command()
def close(
    room: str = typer.Argument(..., help="the room name"),
    client_id: str = typer.Option(None, "--client", help="client id (needed when several clients have a room of that name)"),
    url: str = typer.Option("http://127.0.0.1:8000", envvar="ORCH_URL", help="the running orchestrator"),
    api_key: str = typer.Option(None, envvar="ORCH_API_KEY", help="admin API key, when the server requires one"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Force-close a room now: its agent containers are stopped and the LiveKit room is deleted."""
    import httpx

    from .ps_view import rooms_named

    try:
        if client_id is None:
            rooms = _api_get(url, api_key, "/api/v1/admin/rooms")["rooms"]
            containers = _api_get(url, api_key, "/api/v1/admin/containers")["containers"]
            owners = rooms_named(rooms, containers, room)
            if len(owners) != 1:
                why = "no client has" if not owners else f"several clients have ({', '.join(owners)}); pass --client for"
                typer.echo(f"{why} a room named {room!r} with an agent of this deployment", err=True)
                raise typer.Exit(1)
            client_id = owners[0]
    except PermissionError as exc:
        typer.echo(f"refused: {exc}; set ORCH_API_KEY to an admin key", err=True)
        raise typer.Exit(1) from None
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the orchestrator at {url}: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None

    def human(data: dict) -> str:  # type: ignore[type-arg]
        done = [f"{a['kind']} {a.get('name') or a.get('room')}" + ("" if a["ok"] else f" (failed: {a.get('error')})")
                for a in data["pass"]["actions"]]
        return f"closed room {room} of client {client_id}: " + ("; ".join(done) or "nothing left to do")

    _post_and_report(url, f"/api/v1/admin/rooms/{client_id}/{room}/close", None, api_key=api_key, as_json=as_json, human=human)


@app.command()
def trigger(
    agent_slug: str,
    client_id: str = typer.Option(..., "--client", help="client id"),
    room: str = typer.Option(None, help="room name (generated when omitted)"),
    user_id: str = typer.Option("cli-user", "--user"),
    mode: str = typer.Option("voice", help="voice or text"),
    url: str = typer.Option("http://127.0.0.1:8000", envvar="ORCH_URL", help="the running orchestrator"),
    api_key: str = typer.Option(None, envvar="ORCH_API_KEY", help="API key, when the server requires one"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Trigger an agent through a running orchestrator (same path, same locks as the frontend)."""
    body = {"agent_slug": agent_slug, "mode": mode, "room_name": room, "user_id": user_id, "client_id": client_id}
    _post_and_report(
        url, "/api/v1/trigger-agent", body, api_key=api_key, as_json=as_json,
        human=lambda d: f"{d['status']}: {d['container_name']} in room {d['room_name']} ({d['livekit_url']})",
    )


def _post_and_report(
    url: str, path: str, body: dict | None, *, api_key: str | None, as_json: bool, human: Callable[[dict], str]  # type: ignore[type-arg]
) -> None:
    """POST to the running orchestrator, print the answer (JSON or one human line), exit 0/1/2."""
    import httpx

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    try:
        resp = httpx.post(f"{url}{path}", json=body, headers=headers, timeout=60)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the orchestrator at {url}: {type(exc).__name__}", err=True)
        raise typer.Exit(2) from None
    data = resp.json()
    if as_json:
        typer.echo(json.dumps(data, indent=2))
    elif resp.status_code == 200:
        typer.echo(human(data))
    else:
        typer.echo(f"error {resp.status_code}: {data.get('detail')}", err=True)
    raise typer.Exit(0 if resp.status_code == 200 else 1)


@app.command()
def logs(
    target: str = typer.Argument(..., help="a room name or a container name"),
    tail: int = typer.Option(50, help="lines per container"),
) -> None:
    """Show the logs of the agent container(s) of a room, or of one container."""
    from .runtime.factory import runtime_from_settings

    settings = _settings()
    runtime = runtime_from_settings(settings)

    async def collect() -> list[tuple[str, str]]:
        managed = await runtime.list_managed(scope=settings.scope)
        names = [c.name for c in managed if target in (c.name, c.labels.get(Label.ROOM))]
        return [(n, await runtime.logs_tail(n, lines=tail)) for n in names]

    found = asyncio.run(collect())
    if not found:
        typer.echo(f"no container of scope {settings.scope!r} has room or name {target!r}", err=True)
        raise typer.Exit(1)
    for name, text in found:
        typer.echo(f"==> {name} <==\n{text}")


@app.command()
def reconcile(
    once: bool = typer.Option(False, "--once", help="run one pass and exit (cron mode)"),
    dry_run: bool = typer.Option(False, "--dry-run", help="print the plan, change nothing"),
) -> None:
    """Keep Docker equal to what should exist. --once prints a JSON summary; exit 0 ok, 1 some
    action failed (or part of LiveKit/tenants unobservable), 2 Docker could not be observed."""
    from .engine import Engine
    from .errors import ConfigurationError

    settings = _settings()
    configure_logging(fmt=settings.log_format, level="WARNING")

    async def main() -> int:
        async with Engine.running(settings, loops=False) as engine:
            if not once and not dry_run:
                await engine.reconciler.run_forever()  # without HTTP: no webhooks, observation only
            report = await engine.reconciler.run_once(dry_run=dry_run)
            typer.echo(json.dumps(report.to_dict(), indent=2))
            return report.exit_code

    try:
        code = asyncio.run(main())
    except ConfigurationError as exc:
        typer.echo(f"invalid settings: {exc}", err=True)
        raise typer.Exit(2) from None
    raise typer.Exit(code)


if __name__ == "__main__":
    app()
