"""What a client sees of one agent in a room (pure): starting, joined, in grace, crashed, gave up, with the reason.

Inputs are what the orchestrator already holds: the container (from the engine), the room (from the room
registry, fed by webhooks and reconcile passes, or a fresh LiveKit look), the reconciler's restart record
and its give-ups. Nothing here does I/O or reads a clock.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime

from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules.naming import agent_identity
from orchestrator.rules.planner import RestartRecord
from orchestrator.rules.rooms import Room, RoomState, grace_remaining


class AgentPhase(str, enum.Enum):
    starting = "starting"  # the container is there, the agent is not in the room yet
    joined = "joined"  # in the room with humans (or waiting for the first one)
    in_grace = "in_grace"  # in the room, the last human left: it leaves when the grace period ends
    crashed = "crashed"  # the container exited with an error (restarted while humans are present)
    gave_up = "gave_up"  # crashed more often than ORCH_RESTART_MAX_ATTEMPTS allows: removed, reported
    stopping = "stopping"  # its room is being closed
    stopped = "stopped"  # it left and exited cleanly


@dataclass(frozen=True)
class GaveUpRecord:
    reason: str
    at: datetime
    attempts: int


@dataclass(frozen=True)
class AgentStatus:
    agent_slug: str
    phase: AgentPhase
    reason: str
    container_name: str | None = None
    container_status: str | None = None
    restarts: int = 0
    grace_remaining_s: float | None = None


_UP = (ContainerStatus.running, ContainerStatus.created, ContainerStatus.restarting, ContainerStatus.paused)


def ended_abnormally(c: ContainerInfo) -> bool:
    """Worth keeping the agent's last log lines for: it crashed, died, is restarting, or never became healthy.

    A normal end (its room closed, the grace period over, a clean exit) is not: those last lines are the
    agent's goodbye noise (e.g. LiveKit's "data channel closed" errors) and would read as alarms."""
    if c.status in (ContainerStatus.exited, ContainerStatus.dead):
        return c.exit_code != 0
    if c.status is ContainerStatus.restarting:
        return True
    return c.status is ContainerStatus.running and c.health.value in ("unhealthy", "starting")


def agent_status(
    slug: str, container: ContainerInfo | None, *, room: Room | None, in_room: frozenset[str] | None = None,
    restart: RestartRecord | None = None, gave_up: GaveUpRecord | None = None, now: datetime, grace_s: float,
) -> AgentStatus:
    """One agent's phase. `in_room` (identities LiveKit lists now) wins over the registry's `room.agents`."""
    restarts = restart.attempts if restart else 0
    if container is None:
        if gave_up is not None:
            return AgentStatus(slug, AgentPhase.gave_up, f"{gave_up.reason} (gave up after {gave_up.attempts} restarts)",
                               restarts=gave_up.attempts)
        return AgentStatus(slug, AgentPhase.stopped, "no container for this agent in the room")
    name, status = container.name, container.status.value
    base = {"container_name": name, "container_status": status, "restarts": restarts}
    if container.status not in _UP:
        if container.exit_code == 0:
            return AgentStatus(slug, AgentPhase.stopped, "left the room and exited cleanly", **base)
        code = "unknown" if container.exit_code is None else str(container.exit_code)
        then = f"restart {restarts} done, the next one follows its back-off" if restart else (
            "restarted while humans are in the room, removed otherwise")
        why = container.reason or f"exited with code {code}"  # the engine's reason names the exit's meaning
        return AgentStatus(slug, AgentPhase.crashed, f"{why}; {then}", **base)
    if room is not None and room.state is RoomState.CLOSING:
        return AgentStatus(slug, AgentPhase.stopping, room.reason or "the room is being closed", **base)
    present = in_room if in_room is not None else (room.agents if room else frozenset())
    if agent_identity(slug) in present:
        if room is not None and room.state is RoomState.GRACE_PERIOD:
            left = grace_remaining(room, now=now, grace_s=grace_s)
            return AgentStatus(slug, AgentPhase.in_grace, "no human in the room; it leaves when the grace period ends",
                               grace_remaining_s=left, **base)
        return AgentStatus(slug, AgentPhase.joined, "in the room", **base)
    health = f", health {container.health.value}" if container.health.value != "none" else ""
    why = f" ({container.reason})" if container.reason else ""  # e.g. restarted after it could not join LiveKit
    return AgentStatus(slug, AgentPhase.starting, f"container {status}{health}; not in the room yet{why}", **base)
