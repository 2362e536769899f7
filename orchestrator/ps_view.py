"""The rows of `orchestrator ps` (pure): Docker's view of containers, joined with the API's view of rooms when there is one."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .models import ContainerInfo
from .naming import Label

DOCKER_COLUMNS = ["name", "status", "health", "client_id", "agent", "room", "age"]
API_COLUMNS = ["name", "status", "health", "client_id", "agent", "room", "room_state", "humans", "age", "cpu", "memory"]


def age(seconds: int | None) -> str:
    """Like `docker ps`: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def container_row(c: ContainerInfo, *, now: datetime) -> dict[str, Any]:
    """One managed container as the admin API and `ps` show it: state plus the key from its labels."""
    return {
        "name": c.name, "id": c.id[:12], "status": c.status.value, "health": c.health.value,
        "exit_code": c.exit_code, "client_id": c.labels.get(Label.CLIENT_ID), "agent": c.labels.get(Label.AGENT_SLUG),
        "room": c.labels.get(Label.ROOM), "created_at": c.labels.get(Label.CREATED_AT),
        "age_s": int((now - c.created_at).total_seconds()) if c.created_at else None,
        "node": c.node, "reason": c.reason,  # where it runs on a multi-node engine (a swarm node), and why not running
    }


def with_node(columns: list[str], rows: list[dict[str, Any]]) -> list[str]:
    """A NODE column after STATUS when any row runs on a named node (a swarm); single-engine output is unchanged."""
    if not any(r.get("node") for r in rows) or "node" in columns:
        return columns
    at = columns.index("status") + 1
    return [*columns[:at], "node", *columns[at:]]


def join_rooms(containers: list[dict[str, Any]], rooms: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per container, with its room's lifecycle state and humans (None when the API does not know the room)."""
    by_room = {(r["client_id"], r["room"]): r for r in rooms}
    rows = []
    for c in sorted(containers, key=lambda c: c["name"]):
        room = by_room.get((c.get("client_id"), c.get("room")))
        rows.append({
            **c,
            "room_state": room["state"] if room else None,
            "humans": len(room["humans"]) if room else None,
            "grace_remaining_s": room.get("grace_remaining_s") if room else None,
        })
    return rows


def human_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "age":
        return age(row.get("age_s"))
    if column == "cpu":
        ratio = row.get("cpu_ratio")
        return "-" if ratio is None else f"{ratio * 100:.1f}%"
    if column == "memory":
        mem = row.get("memory_bytes")
        return "-" if mem is None else f"{mem / 1048576:.1f}MiB"
    if column == "room_state" and value == "grace_period" and row.get("grace_remaining_s") is not None:
        return f"grace({int(row['grace_remaining_s'])}s)"
    return "-" if value is None or value == "" else str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[human_cell(r, c) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def rooms_named(rooms: list[dict[str, Any]], containers: list[dict[str, Any]], room: str) -> list[str]:
    """Client ids holding a room of that name (from rooms, else from container labels), for `close <room>`."""
    found = {r["client_id"] for r in rooms if r["room"] == room}
    found |= {c["client_id"] for c in containers if c.get("room") == room and c.get("client_id")}
    return sorted(found)
