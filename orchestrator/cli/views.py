"""The rows of `orchestrator ps` (pure): Docker's view of containers, joined with the API's view of rooms when there is one;
filters and output formats like `docker ps`."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from orchestrator.rules.naming import Label

DOCKER_COLUMNS = ["name", "status", "health", "client_id", "agent", "room", "job", "age"]
API_COLUMNS = ["name", "status", "health", "client_id", "agent", "room", "job", "room_state", "humans", "age", "cpu", "memory"]
WIDE_EXTRA = ["id", "exit_code", "created_at"]  # `-o wide` adds these to either view

# `--filter key=value`: the row field each key (or docker-style `label=<label>=<value>`) matches.
FILTER_KEYS = {"name": "name", "id": "id", "status": "status", "health": "health", "client": "client_id",
               "client_id": "client_id", "agent": "agent", "room": "room", "room_state": "room_state"}
LABEL_FIELDS = {Label.CLIENT_ID: "client_id", Label.AGENT_SLUG: "agent", Label.ROOM: "room"}


def parse_filter(text: str) -> tuple[str, str]:
    """`room=r1` or `label=agent-orchestrator.room=r1` → (row field, value); ValueError names what is accepted."""
    key, sep, value = text.partition("=")
    if not sep:
        raise ValueError(f"filter {text!r} is not key=value")
    if key == "label":
        label, sep, value = value.partition("=")
        if not sep or label not in LABEL_FIELDS:
            raise ValueError(f"label filters take label=<{'|'.join(LABEL_FIELDS)}>=<value>")
        return LABEL_FIELDS[label], value
    if key not in FILTER_KEYS:
        raise ValueError(f"unknown filter {key!r}; use one of {', '.join(sorted(FILTER_KEYS))} or label=...")
    return FILTER_KEYS[key], value


def matches(row: dict[str, Any], filters: list[tuple[str, str]]) -> bool:
    """Every filter must hold (like repeated `docker ps --filter`); `name` matches a part of the name, others exactly."""
    for field, value in filters:
        have = "" if row.get(field) is None else str(row[field])
        if not (value in have if field == "name" else have == value):
            return False
    return True


def age(seconds: int | None) -> str:
    """Like `docker ps`: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


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


def mib(n: int | None) -> str | None:
    """Bytes as `ps` shows memory (None stays None: unknown, not 0)."""
    return None if n is None else f"{n / 1048576:.1f}MiB"


def human_cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if column == "age":
        return age(row.get("age_s"))
    if column == "cpu":
        ratio = row.get("cpu_ratio")
        return "-" if ratio is None else f"{ratio * 100:.1f}%"
    if column == "memory":
        return mib(row.get("memory_bytes")) or "-"
    if column == "room_state" and value == "grace_period" and row.get("grace_remaining_s") is not None:
        return f"grace({int(row['grace_remaining_s'])}s)"
    return "-" if value is None or value == "" else str(value)


def table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    cells = [[human_cell(r, c) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.upper().ljust(w) for c, w in zip(columns, widths, strict=True)).rstrip()]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    return "\n".join(lines)


def plain_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Rows of plain strings as an aligned table with upper-case headers."""
    return table([{c: ("-" if r.get(c) in (None, "") else str(r[c])) for c in columns} for r in rows], columns)


def rooms_named(rooms: list[dict[str, Any]], containers: list[dict[str, Any]], room: str) -> list[str]:
    """Client ids holding a room of that name (from rooms, else from container labels), for `close <room>`."""
    found = {r["client_id"] for r in rooms if r["room"] == room}
    found |= {c["client_id"] for c in containers if c.get("room") == room and c.get("client_id")}
    return sorted(found)



def admin_path(*segments: str) -> str:
    """An admin API path with every segment quoted: a room named `a%20b` must not reach the server as `a b`."""
    # `.` and `..` would be resolved away by the client as dot-segments: spell them out.
    return "/api/v1/admin/" + "/".join(s.replace(".", "%2E") if s in (".", "..") else quote(s, safe="") for s in segments)
