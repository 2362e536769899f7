"""The worker registrations dispatch holds: one per (client, agent name), following the tenants and their credentials."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import aiohttp

from orchestrator.core.errors import NotFound, OrchestratorError
from orchestrator.core.models import LiveKitCredentials
from orchestrator.dispatch.rules import AUTOMATIC, RegistrationKey, desired_registrations, registration_changes
from orchestrator.dispatch.worker import JobHandler, WorkerConnection
from orchestrator.observability.events import EventFeed
from orchestrator.observability.metrics import Metrics
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

log = logging.getLogger(__name__)


class Registrations:
    """Opens, closes and reconnects the registrations; knows which clients share a LiveKit server."""

    def __init__(
        self, *, settings: Settings, tenants: TenantStore, metrics: Metrics, feed: EventFeed,
        handler: Callable[[], JobHandler],
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._metrics = metrics
        self._feed = feed
        self._handler = handler
        self.connections: dict[RegistrationKey, WorkerConnection] = {}
        self._servers: dict[str, str] = {}  # client id → its LiveKit URL (who shares a server with whom)
        self._session: aiohttp.ClientSession | None = None
        self.last_sync_error = ""

    def sharing(self, url: str) -> list[str]:
        """The clients registered on the LiveKit server at `url`."""
        return [cid for cid, u in self._servers.items() if u == url]

    async def aclose(self) -> None:
        for conn in list(self.connections.values()):
            await conn.close()
        self.connections.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def sync(self) -> None:
        """Registrations follow the tenants: new agents register, removed ones leave, rotated credentials reconnect."""
        found: list[tuple[str, LiveKitCredentials, list[str]]] = []
        keep: set[str] = set()  # clients we could not read now: their registrations stay as they are
        errors: list[str] = []
        for client_id in await self._client_ids(errors):
            try:
                client = await self._tenants.get_client(client_id)
                found.append((client.id, client.livekit, await self._tenants.list_agent_slugs(client)))
            except NotFound as exc:
                errors.append(exc.message)  # its registrations go: the client is gone (or was never there)
            except OrchestratorError as exc:
                keep.add(client_id)
                errors.append(f"{client_id}: {exc.message}")
        self.last_sync_error = "; ".join(errors)
        desired = desired_registrations(found, automatic=self._settings.dispatch_automatic)
        for reg, conn in self.connections.items():
            if reg.client_id in keep:
                desired[reg] = conn.creds
        self._servers = {cid: creds.url for cid, creds, _ in found} | {
            reg.client_id: conn.creds.url for reg, conn in self.connections.items() if reg.client_id in keep
        }
        current = {reg: conn.creds for reg, conn in self.connections.items()}
        stop, start = registration_changes(current, desired)
        for reg in stop:
            await self.connections.pop(reg).close()
            self._feed.publish("dispatch", f"registration {reg} removed", client_id=reg.client_id, agent=reg.agent_name or "*")
        if start and self._session is None:
            # No total timeout (a registration lives for hours); a connect that hangs is given up after 10 s.
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None, connect=10, sock_connect=10))
        for reg in start:
            assert self._session is not None
            conn = WorkerConnection(
                reg, desired[reg], handler=self._handler(), reconnect_max_s=self._settings.dispatch_reconnect_max_s,
                session=self._session,
            )
            self.connections[reg] = conn
            conn.start()
        self.count()

    async def _client_ids(self, errors: list[str]) -> list[str]:
        """ORCH_DISPATCH_CLIENTS, else every client the store lists; when it cannot list now, the current ones."""
        if self._settings.dispatch_clients:
            return list(self._settings.dispatch_clients)
        lister = getattr(self._tenants, "list_clients", None)
        if lister is None:
            errors.append("this tenant store cannot list clients: set ORCH_DISPATCH_CLIENTS")
            return []
        try:
            return [c.id for c in await lister()]
        except OrchestratorError as exc:
            errors.append(exc.message)
            return sorted({reg.client_id for reg in self.connections})

    def count(self) -> None:
        states = [c.state for c in self.connections.values()]
        for state in ("connecting", "registered", "backoff"):
            self._metrics.dispatch_registrations.labels(state=state).set(states.count(state))

    def rows(self) -> list[dict[str, Any]]:
        return [
            {"client_id": reg.client_id, "agent_name": reg.agent_name, "automatic": reg.agent_name == AUTOMATIC,
             "url": conn.creds.url, "state": conn.state, "worker_id": conn.worker_id or None,
             "registrations": conn.registrations, "last_error": conn.last_error or None,
             "load": round(conn.load.value, 3) if conn.load else None, "full": conn.load.full if conn.load else None}
            for reg, conn in sorted(self.connections.items(), key=lambda kv: str(kv[0]))
        ]

    def registered(self, client_id: str, agent_name: str) -> bool:
        conn = self.connections.get(RegistrationKey(client_id, agent_name))
        return conn is not None and conn.state == "registered"
