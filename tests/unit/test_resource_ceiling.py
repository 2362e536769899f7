"""The operator's ceiling on per-agent container resources (pure table)."""

from __future__ import annotations

import pytest

from orchestrator.core.models import Resources
from orchestrator.tenants.limits import ResourceCeiling, memory_bytes

CEILING = ResourceCeiling.parse(memory="1g", cpus=2.0, pids=512)


@pytest.mark.parametrize("text,expected", [("512m", 512 * 1024**2), ("1g", 1024**3), ("1048576", 1048576), ("64K", 65536)])
def test_memory_notation(text: str, expected: int) -> None:
    assert memory_bytes(text) == expected


@pytest.mark.parametrize("text", ["0", "0m", "0g", "", "1t", "-1m", "1.5g", "99999999999999999999"])
def test_memory_refused(text: str) -> None:
    with pytest.raises(ValueError):
        memory_bytes(text)


@pytest.mark.parametrize("asked,got", [
    (Resources(), Resources()),
    (Resources(memory="256m", cpus=0.5, pids=100), Resources(memory="256m", cpus=0.5, pids=100)),
    (Resources(memory="64g", cpus=64, pids=10**6), Resources(memory="1g", cpus=2.0, pids=512)),
    (Resources(memory="1k"), Resources(memory="6m")),  # Docker's minimum
])
def test_clamp(asked: Resources, got: Resources) -> None:
    assert CEILING.clamp(asked) == got


def test_unlimited_memory_is_refused_not_clamped() -> None:
    with pytest.raises(ValueError, match="no limit"):
        CEILING.clamp(Resources(memory="0"))
