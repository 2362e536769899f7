"""Warm mode: a pool member loads Python, the rtc library and the agent, then waits for ONE assignment.

Two channels, one assignment format (`parse_assignment`); the image label `agent-orchestrator.warm-mode` lists both:
- stdin-v1 (Docker): only whoever holds the engine API can attach to a container's stdin, so the channel needs no
  port on the agents' network and nothing of the tenant ever sits in env, labels or logs.
- livekit-lobby-v1 (Swarm, where the orchestrator reaches only a manager and cannot attach to a task on another
  node; Docker for sandboxed runtimes, whose first connect is slow): the member waits in a lobby room with a
  join-only token (no publish, no data, no subscribe; a secret file on Swarm, on Docker the first line on its stdin,
  never env) and takes the first server-sent data packet on the assignment topic addressed to it
  (RoomService.SendData needs the API secret, so no member can forge one), then leaves the lobby.
Either way the assignment is taken exactly once (at most once); EOF, a lost lobby or no assignment within the
member's max age ends the process (exit 0), and the orchestrator makes a fresh member.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable, Mapping

from . import health
from .config import ConfigError

WARM_ENV = "AGENT_WARM"
MAX_AGE_ENV = "AGENT_WARM_MAX_AGE_SECONDS"
_BEAT_S = 2.0  # the heartbeat is stale after health.STALE_AFTER_S; beat well inside it
MAX_LINE = 256 * 1024  # an assignment is a few KB; a runaway writer cannot make us hold more
LOBBY_ROOM_ENV = "AGENT_LOBBY_ROOM"  # set: wait in this LiveKit room (livekit-lobby-v1) instead of on stdin
LOBBY_TOKEN_ENV = "AGENT_LOBBY_TOKEN"  # join-only, this member's identity; on Swarm a secret file, never in the spec
ASSIGNMENT_TOPIC = "orchestrator.assignment"


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


def parse_lobby_token(line: bytes) -> str:
    """The lobby token line a Docker member reads first: {"lobby_token": "..."} (orchestrator rules.lobby_token_line)."""
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise ConfigError("the lobby token line is not valid JSON") from None
    token = data.get("lobby_token") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise ConfigError("the lobby token line must be a JSON object with a 'lobby_token' string")
    return token.strip()


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

    lobby = base_env.get(LOBBY_ROOM_ENV, "").strip()
    if lobby:
        url, token = base_env.get("LIVEKIT_URL", "").strip(), base_env.get(LOBBY_TOKEN_ENV, "").strip()
        if url and not token:  # Docker: the orchestrator writes the token on stdin, so it is never in our env
            first = wait_for_line(fd=sys.stdin.fileno(), max_age_s=max_age_s, beat=beat)
            if first is None:
                return None
            token = parse_lobby_token(first)
        if not url or not token:
            raise ConfigError(f"{LOBBY_ROOM_ENV} is set but LIVEKIT_URL or {LOBBY_TOKEN_ENV} is missing")
        line = lobby_in_background(url=url, token=token, max_age_s=max_age_s, beat=beat)
    else:
        line = wait_for_line(fd=sys.stdin.fileno(), max_age_s=max_age_s, beat=beat)
    if line is None:
        return None
    return {**base_env, **parse_assignment(line)}


def is_assignment(*, topic: str | None, from_server: bool) -> bool:
    """Only a server-sent packet (RoomService.SendData: the API secret's holder) on the topic is an assignment."""
    return from_server and topic == ASSIGNMENT_TOPIC


def lobby_in_background(*, url: str, token: str, max_age_s: float, beat: Callable[[], None]) -> bytes | None:
    """The lobby on a thread and event loop of its own: the assignment is returned the moment it arrives, and the
    agent joins its room while the lobby is still being left (leave then join, in series, cost ~30 ms more)."""
    handed: queue.Queue[bytes | None] = queue.Queue(maxsize=1)

    def lobby() -> None:
        try:
            asyncio.run(wait_in_lobby(url=url, token=token, max_age_s=max_age_s, beat=beat, deliver=handed.put))
        finally:
            with contextlib.suppress(queue.Full):
                handed.put_nowait(None)  # none came (or the lobby failed): the caller ends the member

    threading.Thread(target=lobby, name="lobby", daemon=True).start()
    return handed.get()


async def wait_in_lobby(
    *, url: str, token: str, max_age_s: float, beat: Callable[[], None], deliver: Callable[[bytes], None] = lambda _: None,
) -> bytes | None:
    """Connected to the lobby, the first assignment packet addressed to us (also given to `deliver` at once); None when
    the lobby is lost or none came. Leaves the lobby before it returns."""
    from livekit import rtc  # loaded already in warm mode (run imports it); here so stdin mode never needs it

    room = rtc.Room()
    got: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
    lost = asyncio.Event()

    @room.on("data_received")
    def _data(packet: rtc.DataPacket) -> None:
        if not got.done() and is_assignment(topic=packet.topic, from_server=packet.participant is None):
            got.set_result(packet.data[:MAX_LINE])
            deliver(packet.data[:MAX_LINE])

    @room.on("disconnected")
    def _lost(*_: object) -> None:
        lost.set()

    deadline = time.monotonic() + max_age_s
    beat()
    try:
        await room.connect(url, token, rtc.RoomOptions(auto_subscribe=False))
    except Exception as exc:  # rtc.ConnectError and transport errors: this member is useless; the pool makes another
        logging.getLogger("agent_image").error("warm: cannot join the lobby (%s)", type(exc).__name__)
        return None
    try:
        while not got.done() and not lost.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            beat()
            lost_wait = asyncio.ensure_future(lost.wait())
            await asyncio.wait({got, lost_wait}, timeout=min(_BEAT_S, left), return_when=asyncio.FIRST_COMPLETED)
            lost_wait.cancel()
        return got.result() if got.done() else None
    finally:
        await room.disconnect()  # leaving the lobby is the orchestrator's receipt: it watches the member go
