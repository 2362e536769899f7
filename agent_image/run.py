"""The agent process: join the room, run a behaviour, keep the heartbeat, and leave on the right cue."""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from typing import Callable, Protocol

from livekit import rtc

from . import health
from .config import AgentEnv, ConfigError
from .lifecycle import Exit, Failsafe, exit_for_disconnect, headcount
from .offline import OfflineBehaviour, kind_of
from .tracing import AgentTrace

log = logging.getLogger("agent_image")

TICK_S = 1.0
ATTEMPT_TIMEOUT_S = 5.0  # one signal connection attempt
LEAVE_TIMEOUT_S = 3.0  # well inside Docker's stop timeout, so we leave before SIGKILL


class Behaviour(Protocol):
    """What the agent does once in the room: offline (built in) or an LLM session."""

    @property
    def name(self) -> str: ...

    async def start(self, room: rtc.Room) -> None: ...

    async def aclose(self) -> None: ...


def choose_behaviour(env: AgentEnv, *, on_fatal: Callable[[Exit, str], None]) -> Behaviour:
    if env.uses_llm:
        try:
            from .llm import LLMBehaviour  # only here: livekit-agents is slow to import and optional
        except ImportError as exc:
            raise ConfigError(
                f"{env.llm_key_env} is set but this image has no livekit-agents ({exc.name}); "
                "build it with AGENT_IMAGE_EXTRAS=agent-llm or unset the key"
            ) from None
        return LLMBehaviour(env, on_fatal=on_fatal)
    return OfflineBehaviour(env)


class Supervisor:
    """Owns the room connection; ends with exactly one Exit code."""

    def __init__(self, env: AgentEnv, *, trace: AgentTrace | None = None) -> None:
        self.env = env
        self.trace = trace or AgentTrace()  # off unless the orchestrator handed a trace context and an endpoint
        self._joined_ns = 0
        self.room = rtc.Room()
        self._stop = asyncio.Event()
        self._exit: Exit | None = None
        self._why = ""
        self._disconnected_since: float | None = None
        self._state = "connecting"

    def finish(self, code: Exit, why: str) -> None:
        if self._exit is None:
            self._exit, self._why = code, why
        self._stop.set()

    def _beat(self) -> None:
        try:
            health.write(
                self.env.health_file,
                health.Beat(
                    state=self._state, at=time.time(),
                    disconnected_since=self._disconnected_since, unhealthy_after_s=self.env.unhealthy_after_s,
                ),
            )
        except OSError as exc:
            log.warning("cannot write heartbeat %s: %s", self.env.health_file, exc)

    def _wire_events(self) -> None:
        room = self.room

        @room.on("participant_connected")
        def _joined(p: rtc.RemoteParticipant) -> None:
            log.info("participant joined: %s (kind %s)", p.identity, kind_of(p).value)

        @room.on("participant_disconnected")
        def _left(p: rtc.RemoteParticipant) -> None:
            log.info("participant left: %s (kind %s)", p.identity, kind_of(p).value)

        @room.on("local_track_published")
        def _published(publication: rtc.LocalTrackPublication, _track: object) -> None:
            if publication.kind == rtc.TrackKind.KIND_AUDIO:
                self.trace.first_audio(joined_ns=self._joined_ns, track=publication.name)

        @room.on("reconnecting")
        def _reconnecting() -> None:
            self._state, self._disconnected_since = "reconnecting", time.time()
            log.warning("connection to LiveKit lost; reconnecting")
            self._beat()

        @room.on("reconnected")
        def _reconnected() -> None:
            self._state, self._disconnected_since = "joined", None
            log.info("reconnected to the room")
            self._beat()

        @room.on("disconnected")
        def _disconnected(reason: int) -> None:
            name = rtc.DisconnectReason.Name(reason)
            code = exit_for_disconnect(name)
            self.finish(code, f"disconnected by LiveKit ({name})")

    async def run(self) -> Exit:
        try:
            return await self._run()
        finally:
            if self.trace.enabled:  # bounded (FLUSH_TIMEOUT_MS), and off the loop so SIGTERM handling is not held up
                await asyncio.to_thread(self.trace.close)

    async def _run(self) -> Exit:
        env = self.env
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.finish, Exit.OK, f"received {signal.Signals(sig).name}")
        self._beat()
        self._wire_events()
        behaviour = choose_behaviour(env, on_fatal=self.finish)
        log.info(
            "starting agent %s (%s) for room %r: mode=%s behaviour=%s%s",
            env.agent.identity, env.agent.name, env.room, env.mode.value, behaviour.name,
            "" if env.uses_llm else f" (no {env.llm_key_env} set: built-in offline mode)",
        )
        # The SDK retries a failed signal connection itself (3 times); our deadline bounds all of it.
        timeout = env.connect_timeout_s
        options = rtc.RoomOptions(auto_subscribe=True, connect_timeout=min(ATTEMPT_TIMEOUT_S, timeout))
        self.trace.loaded(**{"agent.behaviour": behaviour.name})
        connect_ns = time.time_ns()
        connect = asyncio.ensure_future(self.room.connect(env.livekit_url, env.token, options))
        stopped = asyncio.ensure_future(self._stop.wait())
        done, _ = await asyncio.wait({connect, stopped}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if connect not in done:
            connect.cancel()
            if self._stop.is_set():
                log.info("stopped before joining: %s", self._why)
                self.trace.connected(start_ns=connect_ns, error="stopped")
                return self._exit if self._exit is not None else Exit.OK
            self.trace.connected(start_ns=connect_ns, error="timeout")
            log.error("could not join room %r at %s: no answer within %gs", env.room, env.livekit_url, timeout)
            return Exit.UNREACHABLE
        if connect.exception() is not None:
            exc = connect.exception()
            detail = exc.message if isinstance(exc, rtc.ConnectError) else f"{type(exc).__name__}: {exc}"
            log.error("could not join room %r at %s: %s", env.room, env.livekit_url, detail)
            self.trace.connected(start_ns=connect_ns, error=detail)
            return Exit.UNREACHABLE
        self.trace.connected(start_ns=connect_ns)
        self._joined_ns = time.time_ns()
        self._state = "joined"
        self._beat()
        count = headcount(kind_of(p) for p in self.room.remote_participants.values())
        log.info(
            "joined the room %r as %s (%s); %d human(s), %d other agent(s) present",
            env.room, self.room.local_participant.identity, env.agent.name, count.humans, count.agents,
        )
        # Started alongside the loop below, not awaited before it: an LLM session can take long to
        # start (or hang on its provider), and SIGTERM, the heartbeat and the failsafe must still work.
        starting = asyncio.ensure_future(behaviour.start(self.room))
        starting.add_done_callback(self._started)
        failsafe = Failsafe(after_s=env.failsafe_after_s, now=time.monotonic())
        while not self._stop.is_set():
            now = time.monotonic()
            humans = headcount(kind_of(p) for p in self.room.remote_participants.values()).humans
            failsafe.observe(now=now, humans=humans)
            if failsafe.expired(now):
                self.finish(
                    Exit.OK,
                    f"no human in the room for {failsafe.alone_for(now):.0f}s "
                    f"(grace {env.grace_s:g}s + margin {env.failsafe_margin_s:g}s): failsafe",
                )
                break
            self._beat()
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=TICK_S)
            except asyncio.TimeoutError:
                pass
        if not starting.done():
            starting.cancel()
        code = self._exit if self._exit is not None else Exit.CRASH
        log.info("leaving the room: %s", self._why)
        await self._leave(behaviour=behaviour)
        log.info("left the room; exit %d (%s)", int(code), code.name)
        return code

    def _started(self, task: "asyncio.Future[None]") -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            log.error("the agent behaviour failed to start: %s: %s", type(exc).__name__, exc, exc_info=exc)
            self.finish(Exit.CRASH, "the agent behaviour failed to start")

    async def _leave(self, *, behaviour: Behaviour | None) -> None:
        self._state = "leaving"
        self._beat()
        try:
            if behaviour is not None:
                await asyncio.wait_for(behaviour.aclose(), timeout=LEAVE_TIMEOUT_S)
        except Exception as exc:  # leaving matters more than a clean behaviour shutdown
            log.warning("behaviour did not close cleanly: %s", exc)
        try:
            await asyncio.wait_for(self.room.disconnect(), timeout=LEAVE_TIMEOUT_S)
        except Exception as exc:
            log.warning("disconnect did not finish cleanly: %s", exc)
