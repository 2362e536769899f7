"""The container runtime seam: a protocol the engine codes against; Docker now, Swarm later."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from ..models import ContainerInfo, Frozen


class ContainerSpec(Frozen):
    """Everything needed to start one agent container; runtime-neutral (maps onto a Swarm service too)."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str]
    memory: str
    cpus: float
    pids: int
    network: str
    restart_policy: str
    restart_max: int
    stop_timeout_s: int


class NameTaken(Exception):
    """The name is already used: another trigger or process won the race (Docker's 409)."""


class ContainerRuntime(Protocol):
    """Idempotent container operations. Missing containers are None/no-ops, not errors."""

    async def ping(self) -> None: ...

    async def get(self, name: str) -> ContainerInfo | None: ...

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]: ...

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        """Raises NameTaken when a container of that name exists; never leaves a created-but-dead one."""
        ...

    async def start(self, name: str) -> None: ...

    async def stop(self, name: str, *, timeout_s: int) -> None: ...

    async def remove(self, name: str) -> None: ...

    async def logs_tail(self, name: str, *, lines: int = 20) -> str: ...

    async def stats(self, name: str) -> dict[str, Any] | None:
        """One immediate resource-usage sample (Docker's stats JSON); None when the container is gone."""
        ...

    def follow_events(self, *, scope: str, on_event: Callable[[str, str], None]) -> Callable[[], None]:
        """Report container deaths/health changes as they happen; returns a stop function."""
        ...

    def close(self) -> None: ...
