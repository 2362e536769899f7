"""Where clients and agents come from: one protocol, interchangeable stores."""

from __future__ import annotations

from typing import Protocol

from orchestrator.core.errors import DependencyRejected, NotFound
from orchestrator.core.models import Agent, Client
from orchestrator.rules.naming import closest


class CredentialsUnusable(DependencyRejected):
    """A client's sealed credentials cannot be opened: its master key is not configured, or the ciphertext
    was moved, altered or re-pointed at another destination. Retrying cannot help; an operator must."""

    status_code = 502  # the tenant store handed over data we cannot use: an upstream fault, never a bare 500
    code = "credentials_unusable"
    default_dependency = "tenants"


class TenantRecordInvalid(DependencyRejected):
    """A client's or agent's row is malformed (missing or mistyped columns); the data must be fixed."""

    status_code = 502
    code = "tenant_record_invalid"
    default_dependency = "tenants"


class TenantStore(Protocol):
    """Read-only view of tenants. Implementations raise NotFound/DependencyUnavailable, never return None."""

    async def get_client(self, client_id: str) -> Client: ...

    async def get_agent(self, client: Client, slug: str) -> Agent: ...

    async def get_agent_by_id(self, client: Client, agent_id: str) -> Agent:
        """Agents are also addressed by id (room metadata, `agent-<id>-<suffix>` rooms)."""
        ...

    async def list_agent_slugs(self, client: Client) -> list[str]: ...

    async def clients_for_livekit_key(self, api_key: str) -> list[Client]: ...

    async def invalidate(self, client_id: str | None = None) -> int:
        """Forget cached tenant data (one client's or all); returns how many entries were expired."""
        ...

    async def aclose(self) -> None:
        """Release connections (the engine calls it once at stop)."""
        ...


def unknown_agent(client: Client, slug: str, known: list[str]) -> NotFound:
    """The 404 for a valid but unknown slug, naming the closest slugs this client has."""
    near = closest(slug, known)
    hint = f"; did you mean {', '.join(near)}?" if near else f"; this client has: {', '.join(sorted(known)[:10]) or 'no agents'}"
    return NotFound(
        f"agent '{slug}' not found for client '{client.id}'{hint}",
        details={"field": "agent_slug", "suggestions": near},
    )


def unknown_agent_id(client: Client, agent_id: str) -> NotFound:
    return NotFound(f"agent id '{agent_id}' not found for client '{client.id}'", details={"field": "agent_id"})


def unknown_client(client_id: str) -> NotFound:
    return NotFound(f"client '{client_id}' not found", details={"field": "client_id"})
