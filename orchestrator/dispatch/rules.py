"""The pure rules of LiveKit dispatch: which registrations to hold, whose room a job is, which agent it
wants, and the load we report. No I/O and no SDK here; table-tested in tests/unit/test_dispatch_rules.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from orchestrator.core.models import LiveKitCredentials, Mode

AUTOMATIC = ""  # the agent_name of the unnamed registration (LiveKit's automatic dispatch)


@dataclass(frozen=True)
class RegistrationKey:
    """One worker registration: a client's LiveKit project and the agent name it registers under."""

    client_id: str
    agent_name: str  # an agent slug, or AUTOMATIC

    def __str__(self) -> str:
        return f"{self.client_id}/{self.agent_name or '*'}"


def desired_registrations(
    clients: Iterable[tuple[str, LiveKitCredentials, Sequence[str]]], *, automatic: bool
) -> dict[RegistrationKey, LiveKitCredentials]:
    """One registration per (client, agent slug), plus one unnamed per client when automatic dispatch is on."""
    out: dict[RegistrationKey, LiveKitCredentials] = {}
    for client_id, creds, slugs in clients:
        for slug in slugs:
            out[RegistrationKey(client_id, slug)] = creds
        if automatic:
            out[RegistrationKey(client_id, AUTOMATIC)] = creds
    return out


def registration_changes(
    current: Mapping[RegistrationKey, LiveKitCredentials], desired: Mapping[RegistrationKey, LiveKitCredentials]
) -> tuple[list[RegistrationKey], list[RegistrationKey]]:
    """(to_stop, to_start). Rotated credentials or a moved URL = stop the old connection and start a new one."""
    stop = [k for k, creds in current.items() if k not in desired or not _same_creds(creds, desired[k])]
    start = [k for k in desired if k not in current or k in stop]
    return sorted(stop, key=str), sorted(start, key=str)


def _same_creds(a: LiveKitCredentials, b: LiveKitCredentials) -> bool:
    return (a.url, a.api_key, a.api_secret.get_secret_value()) == (b.url, b.api_key, b.api_secret.get_secret_value())


def parse_metadata(raw: str) -> dict[str, Any]:
    """Room or job metadata as a JSON object; anything else (plain text, empty) is no metadata."""
    try:
        value = json.loads(raw) if raw else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _text(meta: Mapping[str, Any], key: str) -> str | None:
    value = meta.get(key)
    return value if isinstance(value, str) and value else None


@dataclass(frozen=True)
class Owner:
    client_id: str | None  # None = refuse
    reason: str = ""


def room_owner(
    *, registered_for: str, sharing_server: Sequence[str], room_metadata: str, job_metadata: str, proven: str | None,
) -> Owner:
    """Whose room a job is in. LiveKit routes jobs by agent name alone, across API keys, so on a server
    several clients share a job may reach another client's registration.

    `proven` is the client a valid ownership stamp in the room's metadata names (rules/ownership): only that
    decides on a shared server, where anyone holding a key of it can write a `client_id` into room or job
    metadata. On a server of the registration's client alone, a room is its own unless metadata names another.
    """
    if proven is not None:
        if proven == registered_for:
            return Owner(proven)
        return Owner(None, f"the room belongs to another client, not '{registered_for}' (ownership stamp)")
    others = sorted(set(sharing_server) - {registered_for})
    if others:
        return Owner(None, f"{len(others) + 1} clients share this LiveKit server and the room carries no valid "
                           "ownership stamp of the orchestrator (a client_id in room or dispatch metadata is a claim "
                           "anyone with a key can write); start the room through the trigger API")
    named = _text(parse_metadata(job_metadata), "client_id") or _text(parse_metadata(room_metadata), "client_id")
    if named is not None and named != registered_for:
        return Owner(None, f"the room belongs to client '{named}', not '{registered_for}'")
    return Owner(registered_for)


@dataclass(frozen=True)
class AgentRef:
    """Which agent a job asks for: by slug (named dispatch, metadata) or by id (rooms a spawner names after the agent id)."""

    slug: str | None = None
    agent_id: str | None = None
    reason: str = ""  # set when neither is known: why the job is refused


def agent_for_job(
    *, agent_name: str, room: str, room_metadata: str, job_metadata: str, patterns: Sequence[re.Pattern[str]]
) -> AgentRef:
    """A named job wants its agent name. An automatic one only rooms matching a pattern (the spawner's
    `agent-<agent_id>-<suffix>`, or a deployment's own patterns); the agent comes from the job or room
    metadata (`agent_slug`/`agent_id`), else from the pattern's named group.
    """
    if agent_name != AUTOMATIC:
        return AgentRef(slug=agent_name)
    match = next((m for p in patterns if (m := p.search(room))), None)
    if match is None:
        return AgentRef(reason=f"room '{room}' matches none of this deployment's room patterns")
    for raw in (job_metadata, room_metadata):
        meta = parse_metadata(raw)
        if slug := _text(meta, "agent_slug"):
            return AgentRef(slug=slug)
        if agent_id := _text(meta, "agent_id"):
            return AgentRef(agent_id=agent_id)
    groups = match.groupdict()
    if groups.get("agent_slug"):
        return AgentRef(slug=groups["agent_slug"])
    if groups.get("agent_id"):
        return AgentRef(agent_id=groups["agent_id"])
    return AgentRef(reason=f"room '{room}' matches a pattern but names no agent (no agent_id in its name or metadata)")


def job_mode(job_metadata: str, room_metadata: str) -> Mode:
    """`{"mode": "text"}` in the dispatch or room metadata; voice otherwise."""
    for raw in (job_metadata, room_metadata):
        if _text(parse_metadata(raw), "mode") == Mode.text.value:
            return Mode.text
    return Mode.voice


@dataclass(frozen=True)
class Load:
    value: float  # 0..1, what LiveKit weighs workers by (1 - load)
    full: bool


def load_for(*, client_running: int, total_running: int, max_per_client: int, max_total: int) -> Load:
    """The honest load of one registration: the fuller of its client's limit and the deployment's limit.

    LiveKit picks among AVAILABLE workers weighted by 1 - load and sends nothing to a FULL one.
    """
    value = max(client_running / max_per_client, total_running / max_total)
    return Load(value=min(value, 1.0), full=value >= 1.0)
