"""Typed domain objects shared by every layer; frozen so they can be hashed and cached."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

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
    """An agent definition as its tenant stores it (name, instructions, voice, greeting)."""

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
    """The engine's state of a container, and the one reading of it the trigger, limits and reconciler share.

    `paused` is not ours (we never pause): a frozen agent serves nobody, so it reads as gone — the
    trigger replaces it, the reconciler restarts it while humans wait or removes it, limits skip it.
    """

    created = "created"
    running = "running"
    restarting = "restarting"
    paused = "paused"
    removing = "removing"
    exited = "exited"
    dead = "dead"

    @property
    def reusable(self) -> bool:
        """A trigger may answer with this container as it is."""
        return self is ContainerStatus.running

    @property
    def waiting(self) -> bool:
        """On its way somewhere by itself: wait for it rather than replace it."""
        return self in (ContainerStatus.restarting, ContainerStatus.removing)

    @property
    def gone(self) -> bool:
        """Serves nobody and will not come back by itself: replace, restart or remove."""
        return self in (ContainerStatus.exited, ContainerStatus.dead, ContainerStatus.paused)


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


@dataclass(frozen=True)
class WebhookNotice:
    """A verified LiveKit webhook reduced to what the room state machine needs."""

    id: str
    event: str
    room: str
    identity: str
    is_agent: bool
    created_at: int
    api_key: str
    room_client_id: str | None = None  # from the room metadata we wrote at creation, when LiveKit sends it


class WatchEvent(Frozen):
    """One change seen by `ContainerRuntime.watch`.

    `relist` carries the complete current list of this scope's containers (at start and after every
    reconnect: it replaces whatever the reader held); `upsert` one container's new state; `delete` one
    container gone (`info` is its last known state, at least `id` and `name`); `broken` says the stream
    was lost (the reader must stop trusting what it holds until the next `relist`).
    """

    kind: Literal["relist", "upsert", "delete", "broken"]
    info: ContainerInfo | None = None
    items: tuple[ContainerInfo, ...] = ()
    resource_version: str | None = None  # the engine's own opaque token where it has one (Kubernetes)
    seq: int | None = None  # a number that grows with the engine's time (Docker's timeNano, an etcd revision):
    # lets a reader drop an event older than what it already holds for that container
