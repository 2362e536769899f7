"""Typed bodies of the admin and client-scoped routes, so the OpenAPI schema says what each route returns.

Request bodies and the trigger's answer live in schemas.py; these mirror the engine's views
(reconciler rows, pass reports, container rows, lifecycle events) field by field.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.rules.agent_states import AgentPhase

CLIENT = "df91fd06-816f-4273-a903-5a4861277040"


def _example(**example: object) -> ConfigDict:
    return ConfigDict(json_schema_extra={"examples": [example]})


# ---- admin ----------------------------------------------------------------------------------------


class RoomRow(BaseModel):
    model_config = _example(client_id=CLIENT, room="support-call-7", state="grace_period", humans=[],
                            agents=["agent-clarence-coherence"], since="2026-11-27T10:00:00+00:00", grace_remaining_s=41.5)
    client_id: str
    room: str
    state: Literal["empty", "starting", "active", "grace_period", "closing"]
    humans: list[str]
    agents: list[str]
    since: str | None = Field(description="when STARTING or GRACE_PERIOD began (ISO 8601)")
    grace_remaining_s: float | None


class RoomsOut(BaseModel):
    rooms: list[RoomRow]


class ContainerRow(BaseModel):
    model_config = _example(name="agent_df91fd06_clarence_coherence_support-call-7", id="64e8bb5f057d", status="running",
                            health="healthy", exit_code=None, client_id=CLIENT, agent="clarence-coherence",
                            room="support-call-7", created_at="2026-11-27T10:00:00+00:00", age_s=75,
                            cpu_ratio=0.0123, memory_bytes=52428800)
    name: str
    id: str
    status: str
    health: str
    exit_code: int | None
    client_id: str | None
    agent: str | None
    room: str | None
    created_at: str | None
    age_s: int | None
    cpu_ratio: float | None = Field(None, description="share of one core, from the background sampler")
    memory_bytes: int | None = None
    job: str | None = Field(None, description="the LiveKit job that launched it (dispatched agents only)")
    node: str | None = Field(None, description="where it runs on a multi-node engine (a swarm or Kubernetes node)")
    reason: str | None = Field(None, description="the engine's word for a state, e.g. CrashLoopBackOff or Unschedulable")


class ContainersOut(BaseModel):
    containers: list[ContainerRow]


class ActionOut(BaseModel):
    """One planned or executed action; fields beyond these depend on the kind (name, client_id, room, key, ...)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"kind": "RemoveContainer", "reason": "room closed", "name": "agent_df91fd06_farah_r1", "container_id": "64e8bb5f057d",
         "client_id": CLIENT, "room": "r1", "ok": True}]})
    kind: str
    reason: str
    ok: bool
    error: str | None = None


class ObservedCounts(BaseModel):
    containers: int
    rooms: int


class PassOut(BaseModel):
    """One reconcile pass (the same JSON as `orchestrator reconcile --once`)."""

    started_at: str
    dry_run: bool
    duration_s: float
    observed: ObservedCounts
    actions: list[ActionOut]
    failed: int
    warnings: list[str]
    observe_error: str | None
    exit_code: int = Field(description="0 ok, 1 an action failed or part of LiveKit/tenants was unobservable, 2 Docker unobservable")


class ClosedRoom(BaseModel):
    client_id: str
    room: str


class CloseOut(BaseModel):
    closed: ClosedRoom
    pass_: PassOut = Field(alias="pass")
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)


class ReconcilerStats(BaseModel):
    passes: int
    heartbeat: str | None
    restarts_pending: int
    last_pass: PassOut | None


class ContainerCounts(BaseModel):
    total: int
    running: int


class Limits(BaseModel):
    max_agents_per_room: int
    max_agents_per_client: int
    max_agents_total: int


class StatsOut(BaseModel):
    scope: str
    engine: str | None = Field(None, description="which engine runs the agents: docker, swarm or kubernetes (the dashboard's Engine column)")
    rooms: dict[str, int] = Field(description="`total` and a count per room state")
    containers: ContainerCounts
    limits: Limits
    reconciler: ReconcilerStats


class EventOut(BaseModel):
    model_config = ConfigDict(extra="allow", json_schema_extra={"examples": [
        {"seq": 12, "at": "2026-11-27T10:00:00+00:00", "kind": "trigger", "message": "trigger farah in r1: created agent_df91fd06_farah_r1",
         "outcome": "created", "client_id": CLIENT, "room": "r1"}]})
    seq: int
    at: str
    kind: str
    message: str


class EventsOut(BaseModel):
    events: list[EventOut]


class WebhookAck(BaseModel):
    ok: bool
    duplicate: bool = Field(description="this event id was seen before; nothing was applied twice")
    event: str


# ---- client-scoped lifecycle ----------------------------------------------------------------------


class AgentStateOut(BaseModel):
    model_config = _example(agent_slug="clarence-coherence", phase="joined", reason="in the room",
                            container_name="agent_df91fd06_clarence_coherence_support-call-7", container_status="running",
                            restarts=0, grace_remaining_s=None)
    agent_slug: str
    phase: AgentPhase = Field(description="starting | joined | in_grace | crashed | gave_up | stopping | stopped")
    reason: str
    container_name: str | None = None
    container_status: str | None = None
    restarts: int = 0
    grace_remaining_s: float | None = None


class ClientRoomOut(BaseModel):
    model_config = _example(client_id=CLIENT, room="support-call-7", state="active", humans=["test-user-123"],
                            agents=[AgentStateOut.model_config["json_schema_extra"]["examples"][0]],  # type: ignore[index]
                            grace_remaining_s=None)
    client_id: str
    room: str
    state: Literal["empty", "starting", "active", "grace_period", "closing"] = Field(
        description="the room's lifecycle state as the orchestrator tracks it")
    humans: list[str]
    agents: list[AgentStateOut]
    grace_remaining_s: float | None = None


class ClientRoomsOut(BaseModel):
    rooms: list[ClientRoomOut]


class WaitOut(ClientRoomOut):
    """The room after waiting: `reached` says whether every agent (or the one asked for) joined in time."""

    reached: bool
    waited_s: float


class StoppedOut(BaseModel):
    model_config = _example(client_id=CLIENT, room="support-call-7", agent_slug="clarence-coherence",
                            stopped=["agent_df91fd06_clarence_coherence_support-call-7"])
    client_id: str
    room: str
    agent_slug: str
    stopped: list[str]
