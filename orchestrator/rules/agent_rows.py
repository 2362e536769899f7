"""One managed container as a row (pure): the admin API's containers and `orchestrator ps` show the same fields."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from orchestrator.core.models import ContainerInfo
from orchestrator.rules.naming import Label
from orchestrator.rules.planner import created


def container_row(c: ContainerInfo, *, now: datetime) -> dict[str, Any]:
    """One managed container as the admin API and `ps` show it: state plus the key from its labels."""
    return {
        "name": c.name, "id": c.id[:12], "status": c.status.value, "health": c.health.value,
        "exit_code": c.exit_code, "client_id": c.labels.get(Label.CLIENT_ID), "agent": c.labels.get(Label.AGENT_SLUG),
        "room": c.labels.get(Label.ROOM), "created_at": c.labels.get(Label.CREATED_AT),
        "job": c.labels.get(Label.JOB_ID),  # the LiveKit job that launched it (dispatched agents only)
        # From the key's created-at label, as the planner reads it: a claimed pool member's age is its time as
        # this agent, not the time it waited idle; the engine's time only when the label is missing.
        "age_s": int((now - since).total_seconds()) if (since := created(c)) else None,
        "node": c.node, "reason": c.reason,  # where it runs on a multi-node engine (a swarm node), and why not running
    }
