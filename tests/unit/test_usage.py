"""CPU ratio and memory from Docker stats JSON: plain tables, no Docker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.rules.usage import UsageSample, cpu_ratio, memory_in_use, parse

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def s(cpu: int, system: int | None = None, *, at: float = 0.0, cid: str = "c1", cpus: int = 2) -> UsageSample:
    return UsageSample(container_id=cid, cpu_total_ns=cpu, system_ns=system, online_cpus=cpus,
                       read_at=T0 + timedelta(seconds=at), memory_bytes=1)


@pytest.mark.parametrize(("prev", "cur", "expected"), [
    (s(0, 0), s(500_000_000, 2_000_000_000), 0.5),  # half of one core: 0.5 s CPU in 1 s on 2 cores (2 s of host CPU)
    (s(0, 0), s(2_000_000_000, 2_000_000_000), 2.0),  # both cores flat out
    (s(100, 10), s(100, 2_000_000_010), 0.0),  # idle
    (s(0, None, at=0), s(250_000_000, None, at=1), 0.25),  # no host clock: wall time between reads
    (s(0, 0), s(1, 1, cid="c2"), None),  # another container (same name, recreated): not comparable
    (s(500, 10), s(100, 20), None),  # counters went back: container restarted in between
    (s(0, 5, at=1), s(10, 5, at=1), None),  # no time passed on either clock
])
def test_cpu_ratio(prev: UsageSample, cur: UsageSample, expected: float | None) -> None:
    assert cpu_ratio(prev, cur) == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(("stats", "expected"), [
    ({"usage": 1000, "stats": {"inactive_file": 200}}, 800),  # cgroup v2
    ({"usage": 1000, "stats": {"total_inactive_file": 300, "cache": 500}}, 700),  # cgroup v1
    ({"usage": 1000, "stats": {}}, 1000),
    ({"usage": 100, "stats": {"inactive_file": 400}}, 100),  # cache larger than usage: take usage as is
    ({}, None),  # stopped container
])
def test_memory_in_use(stats: dict, expected: int | None) -> None:  # type: ignore[type-arg]
    assert memory_in_use(stats) == expected


def test_parse_real_shape_and_stopped_container() -> None:
    raw = {
        "read": "2026-11-21T01:51:34.277070373Z",
        "cpu_stats": {"cpu_usage": {"total_usage": 23768697, "percpu_usage": [1, 2]}, "system_cpu_usage": 2705400000000, "online_cpus": 2},
        "memory_stats": {"usage": 913408, "stats": {"total_inactive_file": 0}},
    }
    sample = parse("abc", raw)
    assert sample is not None
    assert (sample.cpu_total_ns, sample.online_cpus, sample.memory_bytes) == (23768697, 2, 913408)
    assert sample.read_at == datetime(2026, 11, 21, 1, 51, 34, 277070, tzinfo=timezone.utc)
    stopped = {"read": "0001-01-01T00:00:00Z", "cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}}
    assert parse("abc", stopped) is None
