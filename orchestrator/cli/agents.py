"""`orchestrator ps | logs | close | trigger`: the agents of a deployment, with `docker ps`-like habits."""

from __future__ import annotations

import asyncio
import json
import queue
import threading
from collections.abc import Callable
from typing import Any

import typer

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import OrchestratorError, TemporaryError
from orchestrator.rules.naming import Label
from orchestrator.cli.failures import load_settings, FAILED, UNAVAILABLE, USAGE, CliFailure, fail, unavailable
from orchestrator.cli.http import KEY_VARIABLE, Api, ApiRefused
from orchestrator.cli.output import Listing, Outcome, json_alias_option, output_option
from orchestrator.cli.views import API_COLUMNS, DOCKER_COLUMNS, WIDE_EXTRA, admin_path, join_rooms, matches, parse_filter, rooms_named, table, with_node

URL_HELP = "the running orchestrator (default ORCH_URL, else http://127.0.0.1:$ORCH_PORT)"
KEY_HELP = f"API key (default {KEY_VARIABLE}); prefer the variable: arguments show in `ps`"


def _url_option() -> Any:
    return typer.Option(None, "--url", help=URL_HELP, show_default=False)


def _key_option() -> Any:
    return typer.Option(None, "--api-key", help=KEY_HELP, show_default=False)


def register(app: typer.Typer) -> None:
    for command in (ps, logs, close, trigger):
        app.command()(command)


def _api(url: str | None, key: str | None, *, timeout_s: float = 60.0) -> Api:
    return Api.from_env(url=url, key=key, timeout_s=timeout_s)


# ---- ps -----------------------------------------------------------------------------------------


def ps(
    output: Listing = output_option(Listing.table),
    as_json: bool = json_alias_option(),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="only container names, one a line (= -o name)"),
    filters: list[str] = typer.Option([], "--filter", "-f", help="key=value: name, status, health, client, agent, room, "
                                      "room_state, or label=agent-orchestrator.room=<room>; repeat to narrow"),
    scope: str = typer.Option(None, "--scope", help="another deployment's scope (Docker's view: the API serves its own)"),
    docker_only: bool = typer.Option(False, "--docker-only", help="do not ask the orchestrator API"),
    url: str = _url_option(),
    api_key: str = _key_option(),
) -> None:
    """List this deployment's agent containers, like `docker ps`, with client, agent, room state, humans, age.

    Room state, humans, CPU and memory come from the orchestrator API when it answers; otherwise the list comes
    from Docker alone (labels) and stderr says why. Exit 3 when neither answers.
    """
    output = Listing.json if as_json else Listing.name if quiet else output
    try:
        wanted = [parse_filter(f) for f in filters]
    except ValueError as exc:
        fail(str(exc), code=USAGE)
    api = _api(url, api_key, timeout_s=10)
    rows: list[dict[str, Any]] | None = None
    why = "not asked (--docker-only)" if docker_only else "not asked (--scope)"
    if not docker_only and scope is None:
        try:
            rows = join_rooms(api.get("/api/v1/admin/containers")["containers"], api.get("/api/v1/admin/rooms")["rooms"])
            columns = list(API_COLUMNS)
        except CliFailure as exc:
            why = exc.message
    if rows is None:
        try:
            rows = _from_docker(scope)
        except CliFailure as exc:
            fail(f"{why}; and {exc.message}" if not docker_only else exc.message, code=UNAVAILABLE)
        columns = list(DOCKER_COLUMNS)
        if not docker_only and scope is None and output != Listing.name:
            typer.echo(f"{why}; showing Docker's view only", err=True)
    rows = [r for r in rows if matches(r, wanted)]
    if output == Listing.name:
        typer.echo("\n".join(r["name"] for r in rows) + ("\n" if rows else ""), nl=False)
    elif output == Listing.json:
        typer.echo(json.dumps(rows, indent=2))
    else:
        typer.echo(table(rows, with_node(columns, rows) + (WIDE_EXTRA if output == Listing.wide else [])))


def _docker_failure(exc: OrchestratorError) -> CliFailure:
    return CliFailure(unavailable(exc), code=UNAVAILABLE if isinstance(exc, TemporaryError) else FAILED)


def _from_docker(scope: str | None) -> list[dict[str, Any]]:
    from orchestrator.runtime.factory import runtime_from_settings
    from orchestrator.rules.agent_rows import container_row

    settings = load_settings()
    runtime = runtime_from_settings(settings)
    try:
        found = asyncio.run(runtime.list_managed(scope=scope or settings.scope))
    except OrchestratorError as exc:
        raise _docker_failure(exc) from None
    finally:
        runtime.close()
    now = utcnow()
    return [container_row(c, now=now) for c in sorted(found, key=lambda c: c.name)]


# ---- logs ---------------------------------------------------------------------------------------


def logs(
    target: str = typer.Argument(..., help="a room name or a container name"),
    tail: int = typer.Option(50, "--tail", "-n", help="lines per container"),
    follow: bool = typer.Option(False, "--follow", "-f", help="keep printing new lines until the containers stop (Ctrl-C ends)"),
    scope: str = typer.Option(None, "--scope", help="another deployment's scope (default ORCH_SCOPE)"),
) -> None:
    """Show the logs of the agent container(s) of a room, or of one container (from Docker directly)."""
    from orchestrator.runtime.factory import runtime_from_settings

    settings = load_settings()
    scope = scope or settings.scope
    runtime = runtime_from_settings(settings)

    async def collect() -> list[str]:
        managed = await runtime.list_managed(scope=scope)
        return sorted(c.name for c in managed if target in (c.name, c.labels.get(Label.ROOM)))

    try:
        names = asyncio.run(collect())
        if not names:
            fail(f"no container of scope {scope!r} has room or name {target!r}")
        if follow:
            if not hasattr(runtime, "follow_logs"):
                fail(f"logs -f needs the Docker runtime (ORCH_RUNTIME={settings.runtime}); use the engine's own logs command", code=USAGE)
            _follow(runtime, names, tail=tail)
            return
        for name in names:
            text = asyncio.run(runtime.logs_tail(name, lines=tail))
            typer.echo(f"==> {name} <==\n{text}", nl=not text.endswith("\n"))
    except OrchestratorError as exc:
        raise _docker_failure(exc) from None
    finally:
        runtime.close()


def _follow(runtime: Any, names: list[str], *, tail: int) -> None:
    """One reader thread per container; lines are printed as they come, prefixed with the name when several."""
    lines: queue.Queue[tuple[str, str | None]] = queue.Queue()
    errors: list[Exception] = []

    def read(name: str) -> None:
        try:
            for chunk in runtime.follow_logs(name, tail=tail):
                for line in chunk.decode(errors="replace").splitlines():
                    lines.put((name, line))
        except Exception as exc:  # reported once the others end
            errors.append(exc)
        finally:
            lines.put((name, None))

    for name in names:
        threading.Thread(target=read, args=(name,), daemon=True, name=f"logs-{name}").start()
    open_streams = len(names)
    while open_streams:
        name, line = lines.get()
        if line is None:
            open_streams -= 1
        else:
            typer.echo(f"{name} | {line}" if len(names) > 1 else line)
    if errors:
        raise errors[0]


# ---- close / trigger ----------------------------------------------------------------------------


def close(
    room: str = typer.Argument(..., help="the room name"),
    client_id: str = typer.Option(None, "--client", "--client-id", help="client id (needed when several clients have a room of that name)"),
    output: Outcome = output_option(Outcome.text),
    as_json: bool = json_alias_option(),
    url: str = _url_option(),
    api_key: str = _key_option(),
) -> None:
    """Force-close a room now: its agent containers are stopped and the LiveKit room is deleted."""
    api = _api(url, api_key)
    if client_id is None:
        owners = rooms_named(api.get("/api/v1/admin/rooms")["rooms"], api.get("/api/v1/admin/containers")["containers"], room)
        if len(owners) != 1:
            why = "no client has" if not owners else f"several clients have ({', '.join(owners)}); pass --client for"
            fail(f"{why} a room named {room!r} with an agent of this deployment")
        client_id = owners[0]

    def human(data: dict[str, Any]) -> str:
        done = [f"{a['kind']} {a.get('name') or a.get('room')}" + ("" if a["ok"] else f" (failed: {a.get('error')})")
                for a in data["pass"]["actions"]]
        return f"closed room {room} of client {client_id}: " + ("; ".join(done) or "nothing left to do")

    _post_and_report(api, admin_path("rooms", client_id, room, "close"), None, as_json=as_json or output == Outcome.json, human=human)


def trigger(
    agent_slug: str = typer.Argument(..., help="the agent's slug (normalised as the API does: `Clarence_Coherence` works)"),
    client_id: str = typer.Option(..., "--client", "--client-id", help="client id"),
    room: str = typer.Option(None, help="room name (generated when omitted)"),
    user_id: str = typer.Option("cli-user", "--user", help="the user id the trigger is made for"),
    mode: str = typer.Option("voice", help="voice or text"),
    output: Outcome = output_option(Outcome.text),
    as_json: bool = json_alias_option(),
    url: str = _url_option(),
    api_key: str = _key_option(),
) -> None:
    """Trigger an agent through a running orchestrator (same path, same locks as the frontend)."""
    body = {"agent_slug": agent_slug, "mode": mode, "room_name": room, "user_id": user_id, "client_id": client_id}
    _post_and_report(
        _api(url, api_key), "/api/v1/trigger-agent", body, as_json=as_json or output == Outcome.json,
        human=lambda d: f"{d['status']}: {d['container_name']} in room {d['room_name']} ({d['livekit_url']})",
    )


def _post_and_report(api: Api, path: str, body: dict[str, Any] | None, *, as_json: bool, human: Callable[[dict[str, Any]], str]) -> None:
    """POST, print the answer (JSON or one human line); exit 0 on 2xx, 1 on a refusal, 3 when unavailable."""
    try:
        _, data = api.post(path, body)
    except ApiRefused as exc:
        if as_json:
            typer.echo(json.dumps(exc.body, indent=2))
            raise typer.Exit(FAILED) from None
        raise
    typer.echo(json.dumps(data, indent=2) if as_json else human(data))
