"""The operator's ceiling on an agent's container resources, and the clamp the tenant stores apply (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..models import Resources

_MEMORY = re.compile(r"^([0-9]{1,15})([bkmg]?)$")
_UNIT = {"": 1, "b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
# Docker refuses a memory limit under 6 MiB; anything smaller is raised to it.
MIN_MEMORY_BYTES = 6 * 1024**2


def memory_bytes(text: str) -> int:
    """Docker notation ('512m', '1g', '1048576') to bytes; ValueError for anything else, and for 0 (= no limit)."""
    m = _MEMORY.match(text.strip().lower())
    if not m:
        raise ValueError(f"memory {text!r} is not Docker notation such as '512m' or '1g'")
    value = int(m.group(1)) * _UNIT[m.group(2)]
    if value == 0:
        raise ValueError(f"memory {text!r} means no limit at all, which is refused")
    return value


@dataclass(frozen=True)
class ResourceCeiling:
    """The most one agent container may get (ORCH_AGENT_MEMORY_MAX, _CPUS_MAX, _PIDS_MAX)."""

    memory: str
    memory_bytes: int
    cpus: float
    pids: int

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
