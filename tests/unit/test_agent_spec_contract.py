"""Contract: the agent image accepts exactly what the trigger puts in a container spec.

The trigger (orchestrator) and the agent (agent_image) never import each other; this test is
where they meet. Real tokens (livekit-api), the fake engine.
"""

from __future__ import annotations

import dataclasses

import pytest

from agent_image.config import AgentConfig, Mode as AgentMode, parse_env
from orchestrator.livekit import client as livekit
from orchestrator.core.models import Agent, Mode
from orchestrator.settings import Settings
from orchestrator.services.trigger import TriggerService
from devtools.fakes import CLIENT, DictTenantStore, FakeRooms, FakeRuntime


class RealTokens(FakeRooms):
    """Rooms in a dict, tokens as the real adapter mints them (a JWT the agent checks)."""

    def user_token(self, creds, *, identity, room, ttl_s):  # type: ignore[no-untyped-def]
        return livekit.user_token(creds, identity=identity, room=room, ttl_s=ttl_s)

    def agent_token(self, creds, *, slug, name, room, ttl_s, client_id=None):  # type: ignore[no-untyped-def]
        return livekit.agent_token(creds, slug=slug, name=name, room=room, ttl_s=ttl_s, client_id=client_id)

# Every variable the agent reads from its environment (agent_image/config.py parse_env).
AGENT_READS = {
    "LIVEKIT_URL", "LIVEKIT_ROOM", "LIVEKIT_TOKEN", "AGENT_MODE", "AGENT_CONFIG", "AGENT_GRACE_SECONDS",
    "AGENT_FAILSAFE_MARGIN_SECONDS", "AGENT_CONNECT_TIMEOUT_SECONDS", "AGENT_UNHEALTHY_AFTER_SECONDS",
    "AGENT_HEALTH_FILE", "AGENT_LLM_KEY_ENV", "OPENAI_API_KEY",
}
AGENTS = [
    Agent(id="a1", slug="farah", name="Farah"),
    Agent(id="0b6f-uuid-like", slug="clarence-coherence", name="Clarence «Cohérence» 🎧", instructions="Be calm.\nAlways.",
          voice="verse", greeting="Hello", model="gpt-4o-mini"),
    Agent(id="a3", slug="x" * 63, name="Long", voice=""),
]


@pytest.mark.parametrize("agent", AGENTS, ids=lambda a: a.slug[:20])
@pytest.mark.parametrize("mode", list(Mode))
@pytest.mark.parametrize("llm_key", [None, "sk-test-not-a-real-key"])
async def test_the_agent_accepts_the_triggers_spec(agent: Agent, mode: Mode, llm_key: str | None) -> None:
    settings = Settings(scope="unit", grace_period_s=45, agent_llm_api_key=llm_key)
    rt = FakeRuntime()
    service = TriggerService(settings=settings, tenants=DictTenantStore({CLIENT: [agent]}), livekit=RealTokens(),
                             runtime=rt)
    await service.trigger(client_id=CLIENT.id, agent_slug=agent.slug, mode=mode, user_id="u1", room_name="room-1")
    env = rt.last_spec.env
    assert set(env) <= AGENT_READS, f"the trigger sets variables the agent never reads: {set(env) - AGENT_READS}"
    parsed = parse_env(env)  # raises ConfigError naming the variable if the contract is broken
    assert (parsed.room, parsed.mode, parsed.grace_s) == ("room-1", AgentMode(mode.value), 45.0)
    assert parsed.livekit_url == CLIENT.livekit.url and parsed.llm_api_key == (llm_key or "")
    told = agent.public_config()
    assert {k: getattr(parsed.agent, k) for k in told} == {**told, "voice": agent.voice or "alloy"}


def test_every_field_the_trigger_tells_is_one_the_agent_knows() -> None:
    known = {f.name for f in dataclasses.fields(AgentConfig)}
    assert set(AGENTS[0].public_config()) <= known
