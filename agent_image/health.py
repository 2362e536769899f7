"""The heartbeat file the agent writes and the rule the Docker HEALTHCHECK applies to it."""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

STALE_AFTER_S = 10.0  # no heartbeat for this long means the event loop is stuck


@dataclass(frozen=True)
class Beat:
    state: str  # "waiting" (warm) | "connecting" | "joined" | "reconnecting" | "leaving"
    at: float  # wall-clock time of this beat (the checker is another process)
    disconnected_since: float | None = None
    unhealthy_after_s: float = 15.0


def verdict(beat: Beat | None, *, now: float, stale_after_s: float = STALE_AFTER_S) -> tuple[bool, str]:
    """(healthy, why): healthy only once joined, and while a reconnect is shorter than the threshold."""
    if beat is None:
        return False, "not joined yet (no heartbeat)"
    if now - beat.at > stale_after_s:
        return False, f"heartbeat is {now - beat.at:.0f}s old: the agent loop is stuck"
    if beat.state == "joined":
        return True, "joined"
    if beat.state == "waiting":
        return True, "waiting for an assignment"  # a warm pool member: ready, not a failure
    if beat.state == "reconnecting" and beat.disconnected_since is not None:
        down = now - beat.disconnected_since
        if down <= beat.unhealthy_after_s:
            return True, f"reconnecting for {down:.0f}s"
        return False, f"disconnected for {down:.0f}s (> {beat.unhealthy_after_s:g}s)"
    return False, beat.state


def write(path: str, beat: Beat) -> None:
    """Atomic replace, so the checker never reads half a file."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".health-")
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(beat), f)
    os.replace(tmp, path)


def read(path: str) -> Beat | None:
    try:
        data = json.loads(Path(path).read_text())
        return Beat(**data)
    except (OSError, ValueError, TypeError):
        return None
