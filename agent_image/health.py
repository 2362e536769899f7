"""The heartbeat file the agent writes, the rule that judges it, and the marker the image's HEALTHCHECK reads.

The agent judges its own beat (`verdict`) as it writes it and keeps a marker file (`<beat file>.ok`) touched while
healthy, removed when not. The HEALTHCHECK is then `find` on the marker's age (a hung loop stops touching it): a
shell and one small binary per check instead of a Python interpreter. Every container is probed, idle pool members
too, so the probe's cost is paid many times over: ~40 ms of CPU instead of ~100 ms (measured: docker exec of each,
30 times), and every 10 s instead of every 3 s. At 65 containers on 2 cores the old probe alone took two cores.
`python -m agent_image.healthcheck` still prints the verdict with its reason, for a person looking.
"""

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


def marker(path: str) -> str:
    """The file the HEALTHCHECK ages (Dockerfile.agent): present and fresh only while the agent is healthy."""
    return path + ".ok"


def write(path: str, beat: Beat, *, now: float | None = None) -> None:
    """The beat (atomic replace, so a reader never sees half a file), then the marker by its verdict."""
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".health-")
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(beat), f)
    os.replace(tmp, path)
    healthy, _ = verdict(beat, now=beat.at if now is None else now)
    if healthy:
        Path(marker(path)).touch()
    else:
        Path(marker(path)).unlink(missing_ok=True)


def read(path: str) -> Beat | None:
    try:
        data = json.loads(Path(path).read_text())
        return Beat(**data)
    except (OSError, ValueError, TypeError):
        return None
