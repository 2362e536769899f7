"""Typed domain objects shared by every layer; frozen so they can be hashed and cached."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Mode(str, enum.Enum):
    voice = "voice"
    text = "text"


class LiveKitCredentials(Frozen):
    """Where a client's rooms live. The secret signs tokens and never leaves the orchestrator."""

    url: str
    api_key: str
    api_secret: SecretStr


class Resources(Frozen):
    """Per-agent overrides of the deployment's container limits."""

    memory: str | None = None  # docker notation, e.g. "512m"
    cpus: float | None = Field(default=None, gt=0)
    pids: int | None = Field(default=None, gt=0)


class Agent(Frozen):
    """An agent definition as its tenant stores it (seed 000: name, instructions, voice, greeting)."""

    id: str
    slug: str
    name: str
    instructions: str = ""
    voice: str = "alloy"
    greeting: str = ""
    model: str = ""
    image: str | None = None
    resources: Resources = Resources()

    def public_config(self) -> dict[str, Any]:
        """What the agent container is told about itself: no credentials, ever."""
        return {
            "id": self.id,
            "slug": self.slug,
            "name": self.name,
            "instructions": self.instructions,
            "voice": self.voice,
            "greeting": self.greeting,
            "model": self.model,
        }


class Client(Frozen):
    """A tenant: its id, display name, LiveKit project and (optionally) its own LLM key."""

    id: str
    name: str
    livekit: LiveKitCredentials
    llm_api_key: SecretStr | None = None  # given to this client's agents only; None: the operator's fallback


class ContainerKey(Frozen):
    """The identity the orchestrator guarantees at most one container for."""

    client_id: str
    agent_slug: str
    room: str


class ContainerStatus(str, enum.Enum):
    created = "created"
    running = "running"
    restarting = "restarting"
    paused = "paused"
    removing = "removing"
    exited = "exited"
    dead = "dead"


class Health(str, enum.Enum):
    none = "none"
    starting = "starting"
    healthy = "healthy"
    unhealthy = "unhealthy"


class ContainerInfo(Frozen):
    """One managed container as the runtime observed it (rebuilt from labels, never cached)."""

    id: str
    name: str
    status: ContainerStatus
    health: Health = Health.none
    labels: dict[str, str] = {}
    created_at: datetime | None = None
    exit_code: int | None = None  # set once exited: tells a crash (non-zero) from a clean exit
    node: str | None = None  # where it runs (a swarm node, a Kubernetes node); None on a single engine
    reason: str | None = None  # the engine's own word for a state (e.g. "CrashLoopBackOff", "no suitable node")


class TriggerOutcome(str, enum.Enum):
    created = "created"
    reused = "reused"
