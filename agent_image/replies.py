"""What the offline agent says (pure): no LLM, but a recognisable answer from the named agent."""

from __future__ import annotations

from .config import AgentConfig

MAX_ECHO = 200
CHAT_TOPIC = "lk.chat"  # the topic livekit-agents and LiveKit's frontends use for chat text streams


def greeting(agent: AgentConfig) -> str:
    return agent.greeting or f"Hi, this is {agent.name}."


def offline_reply(agent: AgentConfig, text: str) -> str:
    said = " ".join(text.split())
    if len(said) > MAX_ECHO:
        said = said[: MAX_ECHO - 1] + "…"
    return f"{agent.name} (offline mode, no LLM configured) heard: {said}"
