"""The JSON we keep in a LiveKit room's metadata, read and written only here (pure).

At creation it names the agent and the owning client (webhooks for tenants sharing a LiveKit key
find the owner there); during a grace period it also carries the grace start, so an orchestrator
restart never closes a room early. Metadata that is not our JSON object is left alone.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from orchestrator.core.models import Agent
from orchestrator.rules.ownership import STAMP_KEY

GRACE_KEY = "orchestrator_grace_started_at"


def for_new_room(*, agent: Agent, client_id: str, stamp: dict[str, str] | None = None) -> str:
    """`stamp`: the ownership stamp (rules/ownership.stamp) that proves the `client_id` claim."""
    body: dict[str, Any] = {"agent_id": agent.id, "agent_slug": agent.slug, "client_id": client_id}
    if stamp is not None:
        body[STAMP_KEY] = stamp
    return json.dumps(body, sort_keys=True)


def _body(metadata: str) -> dict[str, Any] | None:
    try:
        body = json.loads(metadata) if metadata else {}
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def owner(metadata: str) -> str | None:
    """The `client_id` the metadata claims (anyone may write it: rules/ownership proves it); None when none."""
    value = (_body(metadata) or {}).get("client_id")
    return value if isinstance(value, str) else None


def grace_started(metadata: str) -> datetime | None:
    """The persisted grace start, or None when absent or the metadata is not ours."""
    value = (_body(metadata) or {}).get(GRACE_KEY)
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def with_grace(metadata: str, at: datetime | None) -> str | None:
    """The metadata with the grace start set (or cleared); None when it is not a JSON object we can extend."""
    body = _body(metadata)
    if body is None:
        return None
    if at is None:
        body.pop(GRACE_KEY, None)
    else:
        body[GRACE_KEY] = at.isoformat()
    return json.dumps(body, sort_keys=True)


def claimed(existing: str, *, ours: str) -> str | None:
    """Metadata that names us while keeping what was there; None when it is not a JSON object we can extend."""
    body = _body(existing)
    return None if body is None else json.dumps({**body, **json.loads(ours)}, sort_keys=True)


TRIGGER_KEY = "orchestrator_triggered_at"  # the last trigger of a room in grace: every process checks it before closing


def triggered(metadata: str) -> datetime | None:
    """The last trigger stamped into the metadata while the room was in grace (room_claim.RoomClaims.claim)."""
    value = (_body(metadata) or {}).get(TRIGGER_KEY)
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) else None
    except ValueError:
        return None


def with_trigger(metadata: str, at: datetime) -> str | None:
    """The metadata with the trigger stamp set; None when it is not a JSON object we can extend."""
    body = _body(metadata)
    return None if body is None else json.dumps({**body, TRIGGER_KEY: at.isoformat()}, sort_keys=True)
