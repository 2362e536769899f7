"""LLM behaviour (an LLM key is set): a livekit-agents AgentSession in the already-joined room.

The container joins its room itself with the orchestrator's token, so no worker/dispatch is
involved: AgentSession.start(room=...) runs without a job context. Voice mode uses OpenAI's
realtime model (speech in and out, one key); text mode a chat model over LiveKit text streams.
"""

from __future__ import annotations

import logging
from typing import Callable

from livekit import rtc
from livekit.agents import Agent, AgentSession, room_io
from livekit.agents.voice.events import CloseEvent, ErrorEvent
from livekit.plugins import openai

from .config import AgentEnv, Mode
from .lifecycle import Exit
from .replies import greeting

log = logging.getLogger("agent_image.llm")

DEFAULT_TEXT_MODEL = "gpt-4o-mini"


def _models(env: AgentEnv):  # type: ignore[no-untyped-def]
    model = env.agent.model
    if env.mode is Mode.voice:
        # A chat model name (e.g. gpt-4o) cannot drive a realtime session: keep the plugin's default then.
        kwargs = {"model": model} if "realtime" in model else {}
        return openai.realtime.RealtimeModel(voice=env.agent.voice, api_key=env.llm_api_key, **kwargs)
    return openai.LLM(model=model or DEFAULT_TEXT_MODEL, api_key=env.llm_api_key)


class LLMBehaviour:
    def __init__(self, env: AgentEnv, *, on_fatal: Callable[[Exit, str], None] | None = None) -> None:
        self._env = env
        self._on_fatal = on_fatal
        self._session: AgentSession | None = None

    @property
    def name(self) -> str:
        return f"llm ({'openai realtime' if self._env.mode is Mode.voice else 'openai chat'}, key from {self._env.llm_key_env})"

    async def start(self, room: rtc.Room) -> None:
        env = self._env
        voice = env.mode is Mode.voice
        session = AgentSession(llm=_models(env))
        self._session = session

        @session.on("error")
        def _failed(ev: ErrorEvent) -> None:
            # livekit-agents 1.8.9 may fail inside its own close after such an error and then never
            # emit "close": treat an unrecoverable model error as the end, and let Docker retry.
            if not getattr(ev.error, "recoverable", True) and self._on_fatal is not None:
                self._on_fatal(Exit.CRASH, f"unrecoverable LLM error ({type(ev.error).__name__})")

        @session.on("close")
        def _closed(ev: CloseEvent) -> None:
            # An agent whose model is gone cannot talk: end non-zero so Docker's on-failure policy retries.
            if self._on_fatal is not None:
                if ev.error is not None:
                    self._on_fatal(Exit.CRASH, f"the LLM session closed with an error ({type(ev.error).__name__})")
                else:
                    self._on_fatal(Exit.OK, f"the LLM session closed ({ev.reason.value})")

        await session.start(
            agent=Agent(instructions=env.agent.instructions or f"You are {env.agent.name}, a helpful voice assistant."),
            room=room,
            room_options=room_io.RoomOptions(
                audio_input=voice,
                audio_output=voice,
                text_input=True,
                text_output=True,
                # The orchestrator decides when the agent leaves (grace period); a user's
                # disconnect must not end the session early.
                close_on_disconnect=False,
            ),
        )
        session.generate_reply(instructions=f"Greet the user with exactly this sentence: {greeting(env.agent)}")

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.aclose()
