"""Warm mode: a pool member loads Python, the rtc library and the agent, then waits for ONE assignment on stdin.

Why stdin: only whoever holds the engine API can attach to a container's stdin (Docker's attach, Kubernetes'
pods/attach through the API server), so the channel needs no port on the agents' network, no LiveKit key per
pool (a lobby room + SendData would need one to mint lobby tokens and to send), and nothing of the tenant ever
sits in env, labels or logs. The line is read exactly once (at most once); EOF or no line within the member's
max age ends the process (exit 0), and the orchestrator makes a fresh member.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections.abc import Callable, Mapping

from . import health
from .config import ConfigError

WARM_ENV = "AGENT_WARM"
MAX_AGE_ENV = "AGENT_WARM_MAX_AGE_SECONDS"
_BEAT_S = 2.0  # the heartbeat is stale after health.STALE_AFTER_S; beat well inside it
MAX_LINE = 256 * 1024  # an assignment is a few KB; a runaway writer cannot make us hold more


def is_warm(env: Mapping[str, str]) -> bool:
    return env.get(WARM_ENV, "").strip() in ("1", "true", "yes")


def parse_assignment(line: bytes) -> dict[str, str]:
    """The one assignment line: a JSON object {"env": {NAME: value, ...}}; the values become the agent's env."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError("the assignment is not valid JSON") from None
    env = data.get("env") if isinstance(data, dict) else None
    if not isinstance(env, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in env.items()):
        raise ConfigError("the assignment must be a JSON object with an 'env' object of strings")
    return env


def wait_for_line(*, fd: int, max_age_s: float, beat: Callable[[], None], clock: Callable[[], float] = time.monotonic) -> bytes | None:
    """One line from `fd` (raw reads: nothing is buffered past the newline), or None on EOF or after max_age_s."""
    deadline = clock() + max_age_s
    chunks: list[bytes] = []
    size = 0
    while True:
        left = deadline - clock()
        if left <= 0:
            return None
        beat()
        ready, _, _ = select.select([fd], [], [], min(_BEAT_S, left))
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks) or None  # EOF: a writer that closed without a newline still counts once
        chunks.append(chunk)
        size += len(chunk)
        if b"\n" in chunk or size > MAX_LINE:
            return b"".join(chunks).split(b"\n", 1)[0][:MAX_LINE]


def await_assignment(base_env: Mapping[str, str]) -> dict[str, str] | None:
    """Block until the assignment arrives; the agent's environment (ours + the assignment's), or None (none came)."""
    health_file = base_env.get("AGENT_HEALTH_FILE", "").strip() or "/tmp/agent-health.json"
    max_age_s = float(base_env.get(MAX_AGE_ENV, "") or 3600)

    def beat() -> None:
        try:
            health.write(health_file, health.Beat(state="waiting", at=time.time()))
        except OSError:
            pass

    line = wait_for_line(fd=sys.stdin.fileno(), max_age_s=max_age_s, beat=beat)
    if line is None:
        return None
    return {**base_env, **parse_assignment(line)}
