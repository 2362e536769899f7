"""`orchestrator trace <room>`: the last starts in a room, each as a timeline of its stages (from the API)."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Any

import typer

from orchestrator.cli.agents import _key_option, _url_option
from orchestrator.cli.output import output_option
from orchestrator.cli.http import Api

BAR = 40  # columns of the widest bar


class Timeline(StrEnum):
    """`trace`: a timeline per start for people, or the API's records."""

    table = "table"
    json = "json"


def render(starts: list[dict[str, Any]]) -> str:
    """Each start: a header line, then one line per stage with its offset, duration and a bar on one scale (pure)."""
    if not starts:
        return "no starts recorded for this room (this process keeps the last 200 of all rooms)"
    out: list[str] = []
    for s in starts:
        where = " ".join(p for p in (s.get("container") or "", f"on {s['node']}" if s.get("node") else "") if p)
        trace = f"  trace {s['trace_id']}" if s.get("trace_id") else ""
        out.append(f"#{s['id']} {s['kind']} {s.get('agent_slug') or '-'} in {s.get('room') or '-'} "
                   f"({s['client_id']}) at {s['started_at']}: {s['outcome']}, {s['launch']} on {s['engine']} {where}{trace}".rstrip())
        ends = [m["offset_s"] + (m["duration_s"] or 0) for m in s["stages"]] or [0]
        scale = BAR / max(max(ends), 1e-3)
        for m in s["stages"]:
            took = "…" if m["duration_s"] is None else f"{m['duration_s'] * 1000:.1f} ms"
            lead = int(m["offset_s"] * scale)
            width = max(1, int((m["duration_s"] or 0) * scale))
            bar = " " * lead + ("#" * width if m["duration_s"] is not None else ">")
            out.append(f"  {m['stage']:<14} +{m['offset_s'] * 1000:8.1f} ms  {took:>11}  {m['outcome']:<22} |{bar}")
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def trace(
    room: str = typer.Argument(..., help="the room name"),
    client_id: str = typer.Option(None, "--client", help="only this client's starts (an admin key sees all clients)"),
    limit: int = typer.Option(5, "--last", "-n", min=1, max=200, help="how many of the latest starts"),
    output: Timeline = output_option(Timeline.table),
    url: str = _url_option(),
    api_key: str = _key_option(),
) -> None:
    """Where the last starts in ROOM spent their time: tenant lookup, room claim, admission, the engine call, the
    agent's join (restarts and LiveKit-dispatched jobs too), newest first, with each start's trace id when traced."""
    params: dict[str, Any] = {"room": room, "limit": limit}
    if client_id:
        params["client_id"] = client_id
    body = Api.from_env(url=url, key=api_key, timeout_s=15).get("/api/v1/starts", **params)  # failures: GuardedTyper
    typer.echo(json.dumps(body["starts"], indent=2) + "\n" if output == Timeline.json else render(body["starts"]), nl=False)
