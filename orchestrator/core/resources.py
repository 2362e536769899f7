"""Docker's memory notation, read in one place (pure; settings and the tenant stores' clamp both use it)."""

from __future__ import annotations

import re

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
