"""Request and response bodies of the HTTP API; validation here reuses the pure naming rules."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.core.errors import InvalidInput
from orchestrator.core.models import Mode
from orchestrator.rules.naming import AGENT_IDENTITY_PREFIX, clean_slug, has_invisible, validate_room

_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")


def _printable_text(v: str) -> str:
    if not _PRINTABLE.match(v) or v != v.strip() or has_invisible(v):
        raise ValueError("must be printable text without control, invisible or bidi characters or surrounding spaces")
    return v


def _human_identity(v: str) -> str:
    # A user joining as `agent-<slug>` would make LiveKit kick the agent (same identity).
    if v.startswith(AGENT_IDENTITY_PREFIX):
        raise ValueError(f"must not start with '{AGENT_IDENTITY_PREFIX}': that prefix is reserved for agents")
    return v


class TriggerAgentRequest(BaseModel):
    """The body the user's frontend already sends."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=False)

    agent_slug: str = Field(min_length=1, max_length=200, examples=["clarence-coherence"])
    mode: Mode = Mode.voice
    room_name: str | None = Field(default=None, max_length=128, examples=["test-room-1700000000"])
    user_id: str = Field(min_length=1, max_length=128, examples=["test-user-123"])
    client_id: str = Field(min_length=1, max_length=128, examples=["df91fd06-816f-4273-a903-5a4861277040"])

    @field_validator("agent_slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        try:
            return clean_slug(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @field_validator("room_name")
    @classmethod
    def _room(cls, v: str | None) -> str | None:
        if v is None:
            return None
        try:
            return validate_room(v)
        except InvalidInput as exc:
            raise ValueError(exc.message) from None

    @field_validator("user_id", "client_id")
    @classmethod
    def _printable(cls, v: str) -> str:
        return _printable_text(v)

    @field_validator("user_id")
    @classmethod
    def _not_an_agent(cls, v: str) -> str:
        return _human_identity(v)


class AgentOut(BaseModel):
    id: str
    slug: str
    name: str


class TriggerAgentResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{
        "status": "created", "client_id": "df91fd06-816f-4273-a903-5a4861277040",
        "agent": {"id": "3f0c2a9e-7b1d-4c55-9d0e-1a2b3c4d5e6f", "slug": "clarence-coherence", "name": "Clarence Coherence"},
        "room_name": "test-room-1", "mode": "voice", "container_name": "agent_df91fd06_clarence_coherence_test-room-1-6f0d2c1e9a",
        "container_id": "64e8bb5f057d", "container_status": "running", "spec_stale": False,
        "livekit_url": "ws://127.0.0.1:7880", "user_token": "eyJhbGciOiJIUzI1NiIs...",
    }]})

    status: Literal["created", "reused"]
    client_id: str
    agent: AgentOut
    room_name: str
    mode: Mode
    container_name: str
    container_id: str
    container_status: str
    spec_stale: bool = Field(description="the running container was started from an older agent config")
    livekit_url: str
    user_token: str


class SpawnAgentRequest(BaseModel):
    """The dashboard's "Test Agent" button posts `{}`; everything is optional."""

    model_config = ConfigDict(extra="forbid")

    client_id: str | None = Field(
        default=None, min_length=1, max_length=128,
        description="required with an admin key; a client key implies its own client",
    )
    user_id: str | None = Field(default=None, min_length=1, max_length=128, description="token identity; default: a random `user-<hex>`")
    mode: Mode = Mode.voice

    @field_validator("user_id", "client_id")
    @classmethod
    def _printable(cls, v: str | None) -> str | None:
        return None if v is None else _printable_text(v)

    @field_validator("user_id")
    @classmethod
    def _not_an_agent(cls, v: str | None) -> str | None:
        return None if v is None else _human_identity(v)


class SpawnAgentResponse(BaseModel):
    """What the dashboard needs to join the room (its Test Agent button), plus which container serves it."""

    status: Literal["created", "reused"]
    room_name: str
    token: str
    livekit_url: str
    agent: AgentOut
    client_id: str
    container_name: str


class InvalidateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    client_id: str | None = Field(default=None, min_length=1, max_length=128, description="omit to invalidate every client")


class InvalidateResponse(BaseModel):
    expired: int


class ErrorBody(BaseModel):
    """Every error the API answers, including unknown paths (404 `not_found`) and methods (405 `method_not_allowed`)."""

    model_config = ConfigDict(json_schema_extra={"examples": [{
        "detail": "agent 'clarence-coherense' not found for client 'df91fd06-816f-4273-a903-5a4861277040'",
        "code": "not_found", "suggestions": ["clarence-coherence"]}]})
    detail: str
    code: str
    errors: list[dict[str, str]] | None = None
    suggestions: list[str] | None = None


class ViewHealth(BaseModel):
    """The watch-fed view of containers: answers come from it only while `synced`."""

    synced: bool
    age_s: float | None = None  # since the last full relist
    last_event_at: str | None = None
    containers: int = 0


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    docker: str
    reconciler: str = "not running"  # ok | starting (first pass under way) | stalled | not running (cron deployments)
    view: ViewHealth | None = None


class Liveness(BaseModel):
    """/livez: is this process worth keeping? Never depends on the engine or LiveKit."""

    status: Literal["ok", "stalled"]
    reconciler: str = "not running"


class Readiness(BaseModel):
    """/readyz: can this process serve triggers now? The engine must answer, and some LiveKit server."""

    status: Literal["ok", "unavailable"]
    engine: str
    livekit: str = "not checked"  # ok | "N of M unreachable" | not checked (a store that cannot list clients)
    reconciler: str = "not running"
