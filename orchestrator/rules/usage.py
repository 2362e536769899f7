"""CPU and memory of a container from Docker's stats JSON (pure: no I/O, no clock).

One-shot stats (`one_shot=true`, API ≥ 1.41) answer at once but carry no `precpu_stats`, so the CPU
ratio is computed between two of our own samples of the same container.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from orchestrator.core.clock import parse_engine_time


@dataclass(frozen=True)
class UsageSample:
    container_id: str
    cpu_total_ns: int  # cpu_stats.cpu_usage.total_usage: nanoseconds of CPU used since start
    system_ns: int | None  # cpu_stats.system_cpu_usage: host CPU nanoseconds (all cores)
    online_cpus: int
    read_at: datetime | None
    memory_bytes: int | None


def memory_in_use(memory_stats: dict[str, Any]) -> int | None:
    """What `docker stats` shows: usage minus reclaimable page cache (cgroup v2 inactive_file, v1 total_inactive_file)."""
    usage = memory_stats.get("usage")
    if not isinstance(usage, int):
        return None
    stats = memory_stats.get("stats") or {}
    cache = stats.get("inactive_file", stats.get("total_inactive_file", 0))
    return max(0, usage - cache) if isinstance(cache, int) and cache < usage else usage


def parse(container_id: str, raw: dict[str, Any]) -> UsageSample | None:
    """None when the container is not running (Docker answers zeros and no cpu usage then)."""
    cpu = raw.get("cpu_stats") or {}
    total = (cpu.get("cpu_usage") or {}).get("total_usage")
    if not isinstance(total, int) or total <= 0:
        return None
    online = cpu.get("online_cpus") or len((cpu.get("cpu_usage") or {}).get("percpu_usage") or []) or 1
    return UsageSample(
        container_id=container_id, cpu_total_ns=total, system_ns=cpu.get("system_cpu_usage"),
        online_cpus=int(online), read_at=parse_engine_time(raw.get("read")), memory_bytes=memory_in_use(raw.get("memory_stats") or {}),
    )


def cpu_ratio(prev: UsageSample, cur: UsageSample) -> float | None:
    """Cores in use between two samples (1.0 = one full core), as `docker stats` computes it.

    Uses the host's CPU clock when both samples have it, else wall time between the reads.
    None when the two samples cannot be compared (another container, counters went back, no time passed).
    """
    if prev.container_id != cur.container_id:
        return None
    used = cur.cpu_total_ns - prev.cpu_total_ns
    if used < 0:
        return None
    if cur.system_ns is not None and prev.system_ns is not None and cur.system_ns > prev.system_ns:
        return used / (cur.system_ns - prev.system_ns) * cur.online_cpus
    if cur.read_at is not None and prev.read_at is not None:
        wall_ns = (cur.read_at - prev.read_at).total_seconds() * 1e9
        if wall_ns > 0:
            return used / wall_ns
    return None
