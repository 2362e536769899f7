"""The embedded default tenant store: a YAML file of clients and their agents, validated at load."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from orchestrator.core.config_files import load_model, read_yaml
from orchestrator.core.models import Agent, Client, LiveKitCredentials
from orchestrator.rules.naming import clean_slug
from orchestrator.settings import is_placeholder
from orchestrator.tenants import unknown_agent, unknown_agent_id, unknown_client


class _AgentEntry(Agent):
    @field_validator("slug")
    @classmethod
    def _slug(cls, v: str) -> str:
        return clean_slug(v) if v == clean_slug(v) else _bad_slug(v)


def _bad_slug(v: str) -> str:
    raise ValueError(f"slug {v!r} is not canonical; write it as {clean_slug(v)!r}")


class _ClientEntry(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=128)
    name: str
    livekit: LiveKitCredentials
    llm_api_key: SecretStr | None = None  # this client's own LLM key (else the operator's fallback)
    agents: list[_AgentEntry] = []

    @field_validator("livekit")
    @classmethod
    def _real_secret(cls, v: LiveKitCredentials) -> LiveKitCredentials:
        if is_placeholder(v.api_secret.get_secret_value()):
            raise ValueError("livekit.api_secret is a placeholder")
        return v


class _TenantsFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    clients: list[_ClientEntry]


class FileTenantStore:
    """Loads once; a malformed file fails start-up with a ConfigFileError naming the file and the bad entry."""

    def __init__(self, path: Path) -> None:
        data = load_model(Path(path), _TenantsFile, read_yaml(Path(path)))
        self._clients = {c.id: Client(id=c.id, name=c.name, livekit=c.livekit, llm_api_key=c.llm_api_key) for c in data.clients}
        self._agents = {c.id: {a.slug: Agent.model_validate(a.model_dump()) for a in c.agents} for c in data.clients}

    async def get_client(self, client_id: str) -> Client:
        try:
            return self._clients[client_id]
        except KeyError:
            raise unknown_client(client_id) from None

    async def get_agent(self, client: Client, slug: str) -> Agent:
        agents = self._agents.get(client.id, {})
        if slug not in agents:
            raise unknown_agent(client, slug, list(agents))
        return agents[slug]

    async def get_agent_by_id(self, client: Client, agent_id: str) -> Agent:
        for agent in self._agents.get(client.id, {}).values():
            if agent.id == agent_id:
                return agent
        raise unknown_agent_id(client, agent_id)

    async def list_clients(self) -> list[Client]:
        """Every client in the file (LiveKit dispatch registers for each one's agents)."""
        return list(self._clients.values())

    async def list_agent_slugs(self, client: Client) -> list[str]:
        return sorted(self._agents.get(client.id, {}))

    async def clients_for_livekit_key(self, api_key: str) -> list[Client]:
        return [c for c in self._clients.values() if c.livekit.api_key == api_key]

    async def invalidate(self, client_id: str | None = None) -> int:
        return 0  # loaded once at start-up; nothing is cached apart from the file itself

    async def aclose(self) -> None:
        """Nothing to release: the file was read at start-up."""
