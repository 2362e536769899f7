"""`orchestrator ps --pool`: the warm pools, from the API when it answers, else the engine's members (labels)."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import typer

from orchestrator.cli.failures import CliFailure, load_settings
from orchestrator.cli.http import Api
from orchestrator.cli.output import Listing
from orchestrator.cli.views import mib, plain_table

API_COLUMNS = ["pool", "image", "network", "runtime", "memory", "idle", "creating", "target", "warm_time_s", "used"]
ENGINE_COLUMNS = ["pool", "idle", "claimed", "reserved"]


def _from_engine(scope: str | None) -> list[dict[str, Any]]:
    from orchestrator.rules import pool as rules
    from orchestrator.runtime import WarmPoolEngine
    from orchestrator.runtime.factory import runtime_from_settings

    settings = load_settings()
    runtime = runtime_from_settings(settings)
    try:
        if not isinstance(runtime, WarmPoolEngine):
            return []
        members = asyncio.run(runtime.list_members(scope=scope or settings.scope))
    finally:
        runtime.close()
    counts: dict[str, Counter[str]] = {}
    for info, record in members:
        state = rules.state_of(name=info.name, has_record=record is not None, running=not info.status.gone)
        counts.setdefault(info.labels.get(rules.POOL, "?"), Counter())[state.value] += 1
    return [{"pool": p, **{c: n.get(c, 0) for c in ("idle", "claimed", "reserved")}} for p, n in sorted(counts.items())]


def print_pool(api: Api, *, scope: str | None, ask_api: bool, output: Listing) -> None:
    """The POOL section: members per pool (members never appear among the agents of `ps`)."""
    state: dict[str, Any] | None = None
    if ask_api and scope is None:
        try:
            state = api.get("/api/v1/admin/pool")
        except CliFailure as exc:
            typer.echo(f"{exc.message}; showing the engine's members only", err=True)
    if state is not None:
        rows, columns = [{**p, "used": mib(p.get("memory_used_bytes"))} for p in state.get("pools", [])], API_COLUMNS
    else:
        rows, columns = _from_engine(scope), ENGINE_COLUMNS
    if output == Listing.json:
        typer.echo(json.dumps(state if state is not None else {"pools": rows}, indent=2))
        return
    typer.echo("POOL")
    typer.echo(plain_table(rows, columns))
    if state is not None:
        claims = state.get("claims", {})
        typer.echo(f"claims: warm {claims.get('warm', 0)}, cold {claims.get('cold', 0)}, handover failed {claims.get('handover-failed', 0)}"
                   + (f"; problem: {state['problem']}" if state.get("problem") else ""))
