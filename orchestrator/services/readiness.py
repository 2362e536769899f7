"""Readiness of the orchestrator's dependencies: the container engine and each tenant's LiveKit server."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from orchestrator.core.errors import DependencyUnavailable, OrchestratorError
from orchestrator.core.models import LiveKitCredentials
from orchestrator.livekit.service import RoomService
from orchestrator.runtime import ContainerRuntime
from orchestrator.tenants import TenantStore

PROBE_ROOM = "orchestrator-readiness-probe"  # asked for by name only; never created


@dataclass(frozen=True)
class Readiness:
    engine: str  # "ok" or why the engine does not answer
    livekit: dict[str, str] = field(default_factory=dict)  # LiveKit URL -> "ok" | "rejected: …" | why unreachable

    @property
    def ready(self) -> bool:
        """Ready when the engine answers and some LiveKit server does (or none is known).

        One tenant's LiveKit down must not take the orchestrator out of service for the others; when every
        known LiveKit is down, no trigger can succeed, so traffic is better sent elsewhere.
        """
        reachable = [v for v in self.livekit.values() if not v.startswith("unreachable")]
        return self.engine == "ok" and (not self.livekit or bool(reachable))

    def livekit_summary(self) -> str:
        """Counts only: the probe is unauthenticated, and tenants' LiveKit URLs are not everyone's to read."""
        if not self.livekit:
            return "not checked"
        down = sum(v.startswith("unreachable") for v in self.livekit.values())
        return "ok" if not down else f"{down} of {len(self.livekit)} unreachable"


async def check_readiness(
    *, runtime: ContainerRuntime, tenants: TenantStore, livekit: RoomService, timeout_s: float
) -> Readiness:
    """Ping the engine and every distinct LiveKit server the tenant store can list, concurrently, each bounded."""
    engine, servers = await asyncio.gather(_engine(runtime, timeout_s), _livekit(tenants, livekit, timeout_s))
    return Readiness(engine=engine, livekit=servers)


async def _engine(runtime: ContainerRuntime, timeout_s: float) -> str:
    try:
        await asyncio.wait_for(runtime.ping(), timeout_s)
    except OrchestratorError as exc:
        return exc.message
    except TimeoutError:
        return f"the container engine did not answer within {timeout_s:g} s"
    return "ok"


async def _livekit(tenants: TenantStore, livekit: RoomService, timeout_s: float) -> dict[str, str]:
    # Only stores that can list their clients (the file store); a database store is asked per trigger instead.
    lister = getattr(tenants, "list_clients", None)
    if lister is None:
        return {}
    try:
        clients = await asyncio.wait_for(lister(), timeout_s)
    except (OrchestratorError, TimeoutError):
        return {}
    by_url = {c.livekit.url: c.livekit for c in clients}  # one probe per server, whoever's keys
    results = await asyncio.gather(*(_one(livekit, creds, timeout_s) for creds in by_url.values()))
    return dict(zip(by_url, results, strict=True))


async def _one(livekit: RoomService, creds: LiveKitCredentials, timeout_s: float) -> str:
    try:
        await asyncio.wait_for(livekit.list_rooms(creds, names=[PROBE_ROOM]), timeout_s)
    except DependencyUnavailable:
        return "unreachable"
    except TimeoutError:
        return f"unreachable (no answer within {timeout_s:g} s)"
    except OrchestratorError as exc:
        # It answered: the server is up even if this client's keys are wrong (that is the tenant's to fix).
        return f"rejected: {exc.message}"
    return "ok"
