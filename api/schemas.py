"""Request and response bodies of the HTTP API; validation here reuses the pure naming rules."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.errors import InvalidInput
from orchestrator.models import Mode
from orchestrator.naming import AGENT_IDENTITY_PREFIX, clean_slug, validate_room

_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")


def _printable_text(v: str) -> str:
    if not _PRINTABLE.match(v) or v != v.strip():
        raise ValueError("must be printable text without control characters or surrounding spaces")
    return v


def _human_identity(v: str) -> str:
    # A user joining as `agent-<slug>` would make LiveKit kick the agent (same identity).
    if v.startswith(AGENT_IDENTITY_PREFIX):
        raise ValueError(f"must not start with '{AGENT_IDENTITY_PREFIX}': that prefix is reserved for agents")
    return v


class TriggerAgentRequest(BaseModel):
    """The body the user's frontend already sends (seed 004's curl)."""

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
    """Seed 001's "Test Agent" button posts `{}`; everything is optional."""

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
    """What the dashboard needs to join the room (seed 001), plus which container serves it."""

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
    reconciler: str = "not running"  # ok | stalled | not running (cron deployments)
    view: ViewHealth | None = None
