"""The container runtime seam: one protocol the engine codes against; Docker, Swarm and Kubernetes implement it.

Names: callers pass the *logical* container name (`naming.container_name(key)`) to `get`; an engine
whose object names have other rules (a swarm service, a Kubernetes pod) maps it to its own name with a
pure, collision-free function and reports that engine name in `ContainerInfo.name`. `stop`/`remove`
accept an id or a name. Labels are the truth: the key of a container is read from its labels.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any, Protocol, runtime_checkable

from orchestrator.rules.isolation import AgentNetwork, HostPort
from orchestrator.core.models import ContainerInfo, WatchEvent
from orchestrator.rules.launch_spec import ContainerSpec as ContainerSpec  # the pure launch rule owns the spec


# Environment values that are secrets: an engine hands them over outside the object's spec (a Kubernetes Secret,
# a Docker secret on Swarm) wherever it can; plain Docker keeps them in the container's Env (see the README).
# AGENT_LOBBY_TOKEN: a warm member's join-only lobby token (services.pool_lobby).
SECRET_ENV_KEYS = frozenset({"LIVEKIT_TOKEN", "OPENAI_API_KEY", "AGENT_LOBBY_TOKEN"})


class NameTaken(Exception):
    """The name is already used: another trigger or process won the race (Docker's 409, Kubernetes' AlreadyExists)."""


class ContainerRuntime(Protocol):
    """Idempotent container operations. Missing containers are None/no-ops, not errors."""

    engine: str  # "docker" | "swarm" | "kubernetes": shown by ps, the admin API and metrics
    # True when create_and_start answers before the container runs because the engine starts it by itself
    # (Kubernetes: the kubelet). A trigger that finds such a `created` container then answers as the create did,
    # without waiting for it to run: a reuse never holds a caller longer than the create did.
    starts_by_itself: bool

    async def ping(self) -> None: ...

    async def get(self, name: str) -> ContainerInfo | None: ...

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        """One list call per object kind, filtered by the engine on our managed+scope labels."""
        ...

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        """Raises NameTaken when a container of that name exists; never leaves a created-but-dead one."""
        ...

    async def start(self, name: str) -> None: ...

    async def stop(self, name: str, *, timeout_s: int) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def logs_tail(self, name: str, *, lines: int = 20) -> str: ...

    async def stats(self, name: str) -> dict[str, Any] | None:
        """One immediate resource-usage sample (Docker's stats JSON); None when gone or not supported."""
        ...

    def watch(self, *, scope: str) -> AsyncIterator[WatchEvent]:
        """This scope's containers as a stream: a `relist` first, then `upsert`/`delete` as they happen.

        Reconnects by itself after errors (with backoff), yielding `broken` when the stream is lost and a
        fresh `relist` after every reconnect, so a reader that applies events in order is never wrong for longer than the outage.
        Ends only when the consumer stops iterating (or `close`).
        """
        ...

    def close(self) -> None: ...


@runtime_checkable
class Preflight(Protocol):
    """Optional: a runtime that can check settings at start-up (the engine calls it before serving).

    Raises errors.ConfigurationError naming the variable (e.g. ORCH_AGENT_NETWORK) when a setting
    cannot work on this engine.
    """

    async def preflight(self, *, network: str) -> None: ...


@runtime_checkable
class LiveKitEgress(Protocol):
    """Optional: a runtime whose agents' egress names LiveKit's addresses (Kubernetes: the agents' NetworkPolicy).

    Told at start the LiveKit URLs the served clients' agents are given; each address is then reachable on
    LiveKit's ports only (the URL's signal port and ORCH_AGENT_HOST_PORTS), never on every port of that host.
    """

    async def allow_livekit(self, urls: list[str]) -> None: ...


@runtime_checkable
class NetworkProvider(Protocol):
    """Optional: a runtime that can make an isolated network for agents (the Docker runtime).

    Idempotent: an existing network of that name is used as it is. A refusal is a DependencyRejected
    (a clashing subnet, a used-up pool), a daemon that is down a DependencyUnavailable. The engine's own
    options for such a network (no traffic between agents, a known interface name) are the runtime's to add.
    """

    async def ensure_network(
        self, name: str, *, labels: dict[str, str], subnet: str | None, pool: list[str], prefix: int,
        options: dict[str, str] | None = None,
    ) -> AgentNetwork: ...


@runtime_checkable
class NameRelease(Protocol):
    """Optional: a runtime that can take a dead container's name away from it at once (Docker: a rename).

    A crashed agent's replacement then need not wait for the dead one's logs and removal (50-250 ms on a busy
    engine): the restart sets the dead one aside, launches, and removes it (by id) after. Its new name is no
    agent's and no member's (`naming.retired_name`), so only its labels still name the key; a process killed in
    between leaves it to the planner's duplicate rule, which keeps the running, canonically named container.
    """

    async def set_aside(self, container_id: str) -> bool:
        """True when the container's name is free now (also when it was set aside before); False: remove it first."""
        ...


class MemberGone(Exception):
    """The pool member to claim is gone or already claimed by another process: take another one."""


@runtime_checkable
class WarmPoolEngine(Protocol):
    """Optional: a runtime that keeps warm pool members (services.pool). Members hold no tenant data.

    A claim makes a member its key's container atomically, in a way the engine alone remembers (Docker: a
    claim record + a rename to the key's name; Kubernetes: a label patch with a resourceVersion
    precondition); `list_managed`, `get` and `watch` then report it with its key's labels. The assignment
    goes over the member's stdin, which only the holder of the engine API can write.
    """

    async def image_id(self, image: str) -> tuple[str, dict[str, str]] | None:
        """The id the image reference names now (drift) and the image's labels, or None when the engine lacks it."""
        ...

    async def create_member(self, spec: ContainerSpec) -> ContainerInfo: ...

    async def list_members(self, *, scope: str) -> list[tuple[ContainerInfo, dict[str, str] | None]]:
        """This scope's members, idle and claimed, each with its claim record's labels (None: no record)."""
        ...

    async def claim_member(self, member: ContainerInfo, *, name: str, labels: dict[str, str]) -> ContainerInfo:
        """Raises NameTaken (the key is served already) or MemberGone (another process took it, or it died)."""
        ...

    async def hand_over(self, name: str, line: bytes, *, timeout_s: float) -> None:
        """Write the one assignment line to the member's stdin; DependencyUnavailable when it cannot be written."""
        ...

    async def remove_member(self, member: ContainerInfo) -> None:
        """The member (by the name it was listed with: one claimed since is kept) and its claim records."""
        ...


@runtime_checkable
class HostFilter(Protocol):
    """Optional: a runtime that can keep agents on a network it made away from the host's own services.

    `install_host_filter` lets agents reach only `ports` on the network's gateway (LiveKit) and nothing else of the
    host, with egress to the outside per `egress` ("internet" | "livekit-only"); idempotent, returns
    (changed, a one-line description). A host where it cannot be installed raises DependencyRejected naming the fix.
    """

    async def install_host_filter(self, network: AgentNetwork, *, ports: list[HostPort], egress: str) -> tuple[bool, str]: ...

    async def remove_host_filter(self, network: AgentNetwork) -> bool: ...

    async def host_filter_status(self, network: AgentNetwork) -> dict[str, list[str]]: ...

    async def remove_network(self, network: AgentNetwork) -> None:
        """The network and its filter, once no container uses it (the engine refuses before)."""
        ...


@runtime_checkable
class ReachProbe(Protocol):
    """Optional: a runtime that can run a short-lived probe on an agents' network, hardened like an agent, and
    say which targets an agent there can open a TCP connection to ("host:port" → "ok" or why not)."""

    async def probe_reach(
        self, network: AgentNetwork, *, image: str, user: str, scope: str, targets: list[tuple[str, int]], timeout_s: float = 3.0,
    ) -> dict[str, str]: ...
