"""The Supabase tenant store: clients from the platform project, agents from each client's project.

The one adapter for supabase-py. It uses supabase-py's *async* client on purpose: the
orchestrator is an asyncio service, so lookups never block the event loop and need no thread
pool. One `httpx.AsyncClient` with explicit timeouts is shared by every project's client (the
platform's and each client's own), and tests inject its transport. Retries are supabase-py's
own (GET/HEAD on 503/520/network errors, bounded); nothing is stacked on top, and the outage
cache (cache.py) bridges what those retries cannot.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from postgrest.exceptions import APIError
from postgrest.types import CountMethod
from pydantic import SecretStr
from supabase import AsyncClient, AsyncClientOptions

from orchestrator.core.errors import DependencyUnavailable, NotFound, PermanentError, dependency_error
from orchestrator.core.models import Agent, Client
from orchestrator.tenants import unknown_agent, unknown_agent_id, unknown_client
from orchestrator.tenants.credentials import MasterKeys
from orchestrator.tenants.supabase_rows import Tenant, agent_from_row, key_directory, postgrest_status, tenant_from_row
from orchestrator.tenants.cache import OutageCache
from orchestrator.tenants.limits import DEFAULT_CEILING, ResourceCeiling

log = logging.getLogger(__name__)

CLIENT_COLUMNS = "id,name,active,livekit_url,livekit_api_key,livekit_api_secret,supabase_url,supabase_service_key,llm_api_key,data_key"
CONFIG_COLUMNS = "instructions,voice,greeting,model,image,memory,cpus,pids"
# One round trip: the agent with its configuration embedded through the agent_id foreign key.
AGENT_SELECT = f"id,slug,name,agent_configurations({CONFIG_COLUMNS})"
# Rows per page when listing. PostgREST caps every answer at its db-max-rows (Supabase: 1,000)
# without saying so; listings page by key and check PostgREST's exact count instead of trusting it.
PAGE_ROWS = 1000
MAX_PAGES = 1000


class SupabaseTenantStore:
    """TenantStore over supabase-py; every failure is NotFound (404) or DependencyUnavailable (503)."""

    def __init__(
        self,
        *,
        url: str,
        service_key: SecretStr,
        master_keys: MasterKeys,
        timeout_s: float = 5.0,
        retry: bool = True,
        ttl_s: float = 60.0,
        max_stale_s: float = 3600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        key_refresh_s: float = 10.0,
        ceiling: ResourceCeiling = DEFAULT_CEILING,
        allow_unbound: bool = False,
    ) -> None:
        self._ceiling = ceiling
        self._allow_unbound = allow_unbound  # accept v1 secrets (not bound to their URL): an upgrade window only
        self._url = url.rstrip("/")
        self._key = service_key
        self._master_keys = master_keys
        self._timeout_s = timeout_s
        self._retry = retry
        # Explicit timeouts (connect/read/write/pool) instead of httpx's or supabase-py's defaults.
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s), transport=transport, follow_redirects=False)
        self._projects: dict[tuple[str, str], AsyncClient] = {}
        self._clients: OutageCache[Tenant] = OutageCache(ttl_s=ttl_s, max_stale_s=max_stale_s, what="platform Supabase", clock=clock)
        self._agents: OutageCache[Agent] = OutageCache(ttl_s=ttl_s, max_stale_s=max_stale_s, what="client Supabase", clock=clock)
        # Every active client's LiveKit API key, read whole (paged) instead of one query per key asked
        # about: an unauthenticated webhook names any key it likes, so a miss must cost no query and
        # no cache entry. An unknown key re-reads the directory at most once per `key_refresh_s`.
        self._directory: OutageCache[dict[str, tuple[str, ...]]] = OutageCache(
            ttl_s=ttl_s, max_stale_s=max_stale_s, what="platform Supabase", clock=clock
        )
        self._key_refresh_s = key_refresh_s

    # -- TenantStore -------------------------------------------------------------------------

    async def get_client(self, client_id: str) -> Client:
        return (await self._tenant(client_id)).client

    async def get_agent(self, client: Client, slug: str) -> Agent:
        tenant = await self._tenant(client.id)
        return await self._agents.get(
            (client.id, "slug", slug), lambda: self._fetch_agent(tenant, "slug", slug), label=f"agent '{slug}' of client {client.id}"
        )

    async def get_agent_by_id(self, client: Client, agent_id: str) -> Agent:
        try:
            canonical = str(uuid.UUID(agent_id))
        except ValueError:
            # agents.id is a uuid column: PostgREST would answer 400, which is the caller's mistake.
            raise unknown_agent_id(client, agent_id) from None
        tenant = await self._tenant(client.id)
        return await self._agents.get(
            (client.id, "id", canonical), lambda: self._fetch_agent(tenant, "id", canonical), label=f"agent {canonical} of client {client.id}"
        )

    async def list_agent_slugs(self, client: Client) -> list[str]:
        tenant = await self._tenant(client.id)
        # Complete or refused (503): a truncated list would make the planner remove valid agents as unknown.
        rows = await self._all_rows(
            f"agents of client {client.id}", lambda: self._project(tenant).table("agents"), "slug", key="slug", client_id=client.id
        )
        return [r["slug"] for r in rows]

    async def clients_for_livekit_key(self, api_key: str) -> list[Client]:
        directory = await self._directory.get("keys", self._fetch_key_directory, label="the LiveKit key directory")
        if api_key not in directory and (self._directory.age("keys") or 0.0) >= self._key_refresh_s:
            self._directory.invalidate()  # a client added since the last read is found within key_refresh_s
            directory = await self._directory.get("keys", self._fetch_key_directory, label="the LiveKit key directory")
        # Tenants sharing a LiveKit project share its key: one whose row cannot be used (undecryptable,
        # malformed, deactivated meanwhile) is left out, logged, and the others still verify webhooks.
        clients: list[Client] = []
        for client_id in directory.get(api_key, ()):
            try:
                clients.append(await self.get_client(client_id))
            except PermanentError as exc:
                log.warning("client %s left out of its LiveKit key's tenants: %s", client_id, exc.message, extra={"client_id": client_id})
        return clients

    async def invalidate(self, client_id: str | None = None) -> int:
        if client_id is None:
            return self._clients.invalidate() + self._agents.invalidate() + self._directory.invalidate()
        return (
            self._clients.invalidate(lambda k: k == client_id)
            + self._agents.invalidate(lambda k: isinstance(k, tuple) and k[0] == client_id)
            + self._directory.invalidate()
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- platform project --------------------------------------------------------------------

    async def _tenant(self, client_id: str) -> Tenant:
        return await self._clients.get(client_id, lambda: self._fetch_tenant(client_id), label=f"client {client_id}")

    async def _fetch_tenant(self, client_id: str) -> Tenant:
        query = self._platform().table("clients").select(CLIENT_COLUMNS).eq("id", client_id).limit(1)
        rows = await self._rows(f"client {client_id}", query)
        if not rows:
            raise unknown_client(client_id)
        row = rows[0]
        if not row.get("active", True):
            raise NotFound(f"client '{client_id}' is deactivated", details={"field": "client_id"})
        return self._tenant_from_row(row)

    async def _fetch_key_directory(self) -> dict[str, tuple[str, ...]]:
        rows = await self._all_rows("the clients' LiveKit keys", lambda: self._platform().table("clients"), "id,livekit_api_key,active", key="id")
        return key_directory(rows)

    def _tenant_from_row(self, row: dict[str, Any]) -> Tenant:
        return tenant_from_row(
            row, master_keys=self._master_keys, platform_url=self._url, platform_key=self._key, allow_unbound=self._allow_unbound,
        )

    # -- client projects ---------------------------------------------------------------------

    async def _fetch_agent(self, tenant: Tenant, column: str, value: str) -> Agent:
        cid = tenant.client.id
        query = self._project(tenant).table("agents").select(AGENT_SELECT).eq("client_id", cid).eq(column, value).limit(1)
        rows = await self._rows(f"agent {value} of client {cid}", query)
        if not rows:
            if column == "slug":
                raise unknown_agent(tenant.client, value, await self.list_agent_slugs(tenant.client))
            raise unknown_agent_id(tenant.client, value)
        return agent_from_row(rows[0], client_id=cid, ceiling=None if tenant.own_project else self._ceiling)

    # -- supabase-py -------------------------------------------------------------------------

    def _platform(self) -> AsyncClient:
        return self._supabase(self._url, self._key)

    def _project(self, tenant: Tenant) -> AsyncClient:
        return self._supabase(tenant.project_url, tenant.project_key)

    def _supabase(self, url: str, key: SecretStr) -> AsyncClient:
        cache_key = (url, key.get_secret_value())
        if cache_key not in self._projects:
            options = AsyncClientOptions(httpx_client=self._http, postgrest_client_retry=self._retry)
            self._projects[cache_key] = AsyncClient(url, key.get_secret_value(), options)
        return self._projects[cache_key]

    async def _rows(self, what: str, query: Any) -> list[dict[str, Any]]:
        """Run one PostgREST query; map every transport or API failure to a 503 naming what failed."""
        return list((await self._execute(what, query)).data or [])

    async def _execute(self, what: str, query: Any) -> Any:
        try:
            return await query.execute()
        except httpx.TimeoutException:
            raise DependencyUnavailable(f"Supabase did not answer for {what} within {self._timeout_s:g} s", dependency="tenants") from None
        except httpx.HTTPError as exc:
            raise DependencyUnavailable(f"Supabase unreachable for {what}: {type(exc).__name__}: {exc}", dependency="tenants") from None
        except APIError as exc:
            raise dependency_error(
                "tenants", f"Supabase refused the query for {what}: {exc.code or ''} {exc.message or ''}".strip(),
                status=postgrest_status(exc.code),
            ) from None


    async def _all_rows(self, what: str, table: Callable[[], Any], columns: str, *, key: str, **eq: str) -> list[dict[str, Any]]:
        """Every matching row, paged by `key` (keyset), and as many as PostgREST's exact count says.

        A server that caps answers below PAGE_ROWS is paged past; if the rows still fall short of
        the count, the listing is refused (DependencyUnavailable) rather than silently truncated.
        """
        rows: list[dict[str, Any]] = []
        total: int | None = None
        last: Any = None
        for _ in range(MAX_PAGES):
            query = table().select(columns, count=CountMethod.exact if total is None else None)
            for column, value in eq.items():
                query = query.eq(column, value)
            if last is not None:
                query = query.gt(key, last)
            response = await self._execute(what, query.order(key).limit(PAGE_ROWS))
            page = list(response.data or [])
            if total is None:
                total = response.count
            rows += page
            if not page or (total is not None and len(rows) >= total):
                break
            last = page[-1][key]
        else:
            raise DependencyUnavailable(f"listing {what} did not end within {MAX_PAGES} pages", dependency="tenants")
        if total is not None and len(rows) < total:
            raise DependencyUnavailable(f"listing {what} returned {len(rows)} of {total} rows; not trusting a partial list", dependency="tenants")
        return rows


class PlatformWriter:
    """The admin side of the platform `clients` table (CLI): upsert sealed rows, re-wrap data keys.

    Same adapter and SDK as the store; writes are not retried by supabase-py (POST/PATCH).
    """

    def __init__(self, store: SupabaseTenantStore) -> None:
        self._store = store

    async def existing(self, client_id: str) -> dict[str, Any] | None:
        """The client's data key and the URLs its secrets are bound to; None for a new client."""
        query = self._store._platform().table("clients").select("id,data_key,livekit_url,supabase_url").eq("id", client_id).limit(1)
        rows = await self._store._rows(f"client {client_id}", query)
        return rows[0] if rows else None

    async def upsert(self, row: dict[str, Any], *, exists: bool) -> None:
        table = self._store._platform().table("clients")
        if exists:
            query = table.update({k: v for k, v in row.items() if k != "id"}).eq("id", row["id"])
        else:
            query = table.upsert(row, on_conflict="id")
        await self._store._rows(f"client {row['id']}", query)
        await self._store.invalidate(row["id"])

    async def all_sealed(self) -> list[dict[str, Any]]:
        """Every client's data key, sealed columns and their URLs (paged; never silently truncated)."""
        columns = "id,data_key,livekit_url,supabase_url,livekit_api_secret,supabase_service_key,llm_api_key"
        return await self._store._all_rows("all clients", lambda: self._store._platform().table("clients"), columns, key="id")

    async def update(self, client_id: str, changes: dict[str, Any]) -> None:
        query = self._store._platform().table("clients").update(changes).eq("id", client_id)
        await self._store._rows(f"client {client_id}", query)


def store_from_settings(settings: Any, *, transport: httpx.AsyncBaseTransport | None = None) -> SupabaseTenantStore:
    """The store as configured by ORCH_SUPABASE_* and ORCH_MASTER_KEY* (Settings validated they are all there)."""
    from orchestrator.tenants.credentials import parse_master_key

    keys = MasterKeys(
        keys={kid: parse_master_key(v.get_secret_value()) for kid, v in settings.master_keys.items()},
        current=settings.master_key_id,
    )
    return SupabaseTenantStore(
        url=settings.supabase_url, service_key=settings.supabase_service_key, master_keys=keys,
        timeout_s=settings.supabase_timeout_s, retry=settings.supabase_retry,
        ttl_s=settings.tenant_cache_ttl_s, max_stale_s=settings.tenant_cache_max_stale_s, transport=transport,
        ceiling=ResourceCeiling.from_settings(settings), allow_unbound=settings.allow_unbound_secrets,
    )


__all__ = ["PlatformWriter", "SupabaseTenantStore", "Tenant", "agent_from_row", "postgrest_status", "store_from_settings"]
