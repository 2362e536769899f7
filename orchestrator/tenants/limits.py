"""The operator's ceiling on an agent's container resources, and the clamp the tenant stores apply (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.core.models import Resources
from orchestrator.core.resources import MIN_MEMORY_BYTES, memory_bytes

__all__ = ["MIN_MEMORY_BYTES", "DEFAULT_CEILING", "ResourceCeiling", "memory_bytes"]

@dataclass(frozen=True)
class ResourceCeiling:
    """The most one agent container may get (ORCH_AGENT_MEMORY_MAX, _CPUS_MAX, _PIDS_MAX)."""

    memory: str
    memory_bytes: int
    cpus: float
    pids: int

    @classmethod
    def from_settings(cls, settings: Any) -> "ResourceCeiling":
        """The ceiling a deployment's settings name (ORCH_AGENT_MEMORY_MAX, _CPUS_MAX, _PIDS_MAX)."""
        return cls.parse(memory=settings.agent_memory_max, cpus=settings.agent_cpus_max, pids=settings.agent_pids_max)

    @classmethod
    def parse(cls, *, memory: str, cpus: float, pids: int) -> "ResourceCeiling":
        if cpus <= 0 or pids <= 0:
            raise ValueError("the cpus and pids ceilings must be positive")
        return cls(memory=memory, memory_bytes=memory_bytes(memory), cpus=cpus, pids=pids)

    def clamp(self, res: Resources) -> Resources:
        """Each override kept, lowered to the ceiling (memory raised to Docker's minimum); ValueError for no limit."""
        memory = res.memory
        if memory is not None:
            wanted = memory_bytes(memory)
            if wanted > self.memory_bytes:
                memory = self.memory
            elif wanted < MIN_MEMORY_BYTES:
                memory = f"{MIN_MEMORY_BYTES // 1024**2}m"
        return Resources(
            memory=memory,
            cpus=None if res.cpus is None else min(res.cpus, self.cpus),
            pids=None if res.pids is None else min(res.pids, self.pids),
        )


DEFAULT_CEILING = ResourceCeiling.parse(memory="4g", cpus=4.0, pids=4096)
