"""In-memory stand-ins for the three adapters, for the fast unit tier (no Docker, no LiveKit, no Supabase).

They implement the same protocols as the real adapters (runtime.ContainerRuntime,
room_service.RoomService, tenants.TenantStore) and keep what they were asked in `calls`, so a table
test can say both what the engine answered and what it did. The real adapters keep their own
integration tests; these add a tier, they replace nothing.
"""

from __future__ import annotations

from types import SimpleNamespace

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from typing import Any

import httpx

from orchestrator.core.errors import DependencyUnavailable
from orchestrator.core.models import Agent, Client, ContainerInfo, ContainerStatus, LiveKitCredentials
from orchestrator.rules.naming import Label
from orchestrator.rules.rooms import RoomSnapshot
from orchestrator.runtime import ContainerSpec, NameTaken, WatchEvent
from orchestrator.settings import Settings
from orchestrator.tenants import unknown_agent, unknown_agent_id, unknown_client

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=timezone.utc)


class FakeRuntime:
    """A container engine in a dict, with the races real engines have.

    - `race_names`: the next create of such a name finds it taken: another process's container (of
      `race_labels`, default the same labels) appears under it, then NameTaken is raised.
    - `create_gate`: when set, a create waits for it before the container exists (a slow create);
      `list_gate`: a list takes its snapshot, then waits (a list that answers late).
    - `fail_start`: names whose start raises DependencyUnavailable.
    """

    engine = "fake"
    starts_by_itself = False

    def __init__(self) -> None:
        self.containers: dict[str, ContainerInfo] = {}
        self.logs: dict[str, str] = {}
        self.calls: list[tuple[str, str]] = []
        self.race_names: set[str] = set()
        self.race_labels: dict[str, str] | None = None
        self.race_status = ContainerStatus.running
        self.create_gate: asyncio.Event | None = None
        self.list_gate: asyncio.Event | None = None
        self.fail_start: set[str] = set()
        self.creating = 0
        self.listing = 0
        self.closed = False
        self._ids = itertools.count(1)
        self._seq = itertools.count(1)  # the engine's ordering number of each change (WatchEvent.seq)
        self._watchers: list[asyncio.Queue[WatchEvent]] = []  # one queue per running watch()

    # ---- helpers for tests ----------------------------------------------------------------

    def put(self, name: str, *, labels: dict[str, str], status: ContainerStatus = ContainerStatus.running,
            exit_code: int | None = None) -> ContainerInfo:
        info = ContainerInfo(id=f"c{next(self._ids)}", name=name, status=status, labels=labels, created_at=T0,
                             exit_code=exit_code)
        self.containers[name] = info
        self._emit("upsert", info)
        return info

    def _emit(self, kind: str, info: ContainerInfo) -> None:
        self._publish(WatchEvent(kind=kind, info=info, seq=next(self._seq)))  # type: ignore[arg-type]

    def _publish(self, event: WatchEvent) -> None:
        for queue in self._watchers:
            queue.put_nowait(event)

    def break_stream(self) -> None:
        """The event stream is lost: watchers get `broken`, then a fresh `relist` (as after a reconnect)."""
        self._publish(WatchEvent(kind="broken"))
        self._publish(WatchEvent(kind="relist", items=tuple(self.containers.values()), seq=next(self._seq)))

    def _find(self, ref: str) -> ContainerInfo | None:
        return self.containers.get(ref) or next((c for c in self.containers.values() if c.id == ref), None)

    def _set(self, info: ContainerInfo, **changes: Any) -> ContainerInfo:
        new = info.model_copy(update=changes)
        self.containers[info.name] = new
        self._emit("upsert", new)
        return new

    # ---- ContainerRuntime -----------------------------------------------------------------

    async def ping(self) -> None:
        self.calls.append(("ping", ""))

    async def get(self, name: str) -> ContainerInfo | None:
        self.calls.append(("get", name))
        return self._find(name)

    async def list_managed(self, *, scope: str) -> list[ContainerInfo]:
        self.calls.append(("list", scope))
        found = [c for c in self.containers.values()
                 if c.labels.get(Label.MANAGED) == "true" and c.labels.get(Label.SCOPE) == scope]
        if self.list_gate is not None:
            self.listing += 1
            try:
                await self.list_gate.wait()
            finally:
                self.listing -= 1
        return found

    async def create_and_start(self, spec: ContainerSpec) -> ContainerInfo:
        self.calls.append(("create", spec.name))
        if spec.name in self.race_names:
            self.race_names.discard(spec.name)
            self.put(spec.name, labels=self.race_labels or spec.labels, status=self.race_status)
            raise NameTaken(spec.name)
        if spec.name in self.containers:
            raise NameTaken(spec.name)
        if self.create_gate is not None:
            self.creating += 1
            try:
                await self.create_gate.wait()
            finally:
                self.creating -= 1
        self.last_spec = spec
        return self.put(spec.name, labels=spec.labels)

    async def start(self, name: str) -> None:
        self.calls.append(("start", name))
        if name in self.fail_start:
            raise DependencyUnavailable(f"cannot start {name}", dependency="docker")
        if (info := self._find(name)) is not None:
            self._set(info, status=ContainerStatus.running)

    async def stop(self, name: str, *, timeout_s: int) -> None:
        self.calls.append(("stop", name))
        if (info := self._find(name)) is not None and info.status is ContainerStatus.running:
            self._set(info, status=ContainerStatus.exited, exit_code=0)

    async def remove(self, name: str) -> None:
        self.calls.append(("remove", name))
        if (info := self._find(name)) is not None:
            del self.containers[info.name]
            self._emit("delete", info)

    async def logs_tail(self, name: str, *, lines: int = 20) -> str:
        self.calls.append(("logs", name))
        return self.logs.get(name, "")

    async def stats(self, name: str) -> dict[str, Any] | None:
        return None

    async def watch(self, *, scope: str) -> AsyncIterator[WatchEvent]:
        """A relist of this scope, then every change as it is made here (in order)."""
        def ours(c: ContainerInfo) -> bool:
            return c.labels.get(Label.SCOPE) == scope

        queue: asyncio.Queue[WatchEvent] = asyncio.Queue()
        self._watchers.append(queue)
        try:
            yield WatchEvent(kind="relist", items=tuple(filter(ours, self.containers.values())), seq=next(self._seq))
            while not self.closed:
                event = await queue.get()
                if event.kind == "relist":
                    yield event.model_copy(update={"items": tuple(filter(ours, event.items))})
                elif event.info is None or ours(event.info):
                    yield event
        finally:
            self._watchers.remove(queue)

    def close(self) -> None:
        self.closed = True


class FakeRooms:
    """LiveKit rooms in a dict keyed by (API key, room name); `fail` makes every call raise it."""

    def __init__(self) -> None:
        self.rooms: dict[tuple[str, str], RoomSnapshot] = {}
        self.calls: list[tuple[str, str]] = []
        self.fail: Exception | None = None
        self.closed = False

    def _check(self, what: str, room: str) -> None:
        self.calls.append((what, room))
        if self.fail is not None:
            raise self.fail

    async def ensure_room(self, creds: LiveKitCredentials, *, room: str, metadata: str, empty_timeout_s: int,
                          departure_timeout_s: int) -> RoomSnapshot:
        self._check("ensure_room", room)
        return self.rooms.setdefault((creds.api_key, room), RoomSnapshot(exists=True, metadata=metadata))

    async def observe_rooms(self, creds: LiveKitCredentials, *, names: list[str], concurrency: int = 16
                            ) -> dict[str, RoomSnapshot]:
        self._check("observe_rooms", ",".join(names))
        return {n: self.rooms.get((creds.api_key, n), RoomSnapshot(exists=False)) for n in names}

    async def list_rooms(self, creds: LiveKitCredentials, *, names: list[str] | None = None) -> list[Any]:
        self._check("list_rooms", ",".join(names or []))
        return [SimpleNamespace(name=n, metadata=snap.metadata) for (key, n), snap in self.rooms.items()
                if key == creds.api_key and snap.exists and (not names or n in names)]

    async def update_room_metadata(self, creds: LiveKitCredentials, *, room: str, metadata: str) -> None:
        self._check("update_room_metadata", room)
        if (snap := self.rooms.get((creds.api_key, room))) is not None:
            self.rooms[(creds.api_key, room)] = RoomSnapshot(snap.exists, snap.humans, snap.agents, metadata)

    async def delete_room(self, creds: LiveKitCredentials, *, room: str) -> None:
        self._check("delete_room", room)
        self.rooms.pop((creds.api_key, room), None)

    def join(self, creds: LiveKitCredentials, room: str, *, humans: frozenset[str] = frozenset(),
             agents: frozenset[str] = frozenset()) -> None:
        snap = self.rooms.get((creds.api_key, room), RoomSnapshot(exists=True))
        self.rooms[(creds.api_key, room)] = RoomSnapshot(True, snap.humans | humans, snap.agents | agents, snap.metadata)

    def user_token(self, creds: LiveKitCredentials, *, identity: str, room: str, ttl_s: int) -> str:
        return f"user-token:{identity}:{room}"

    def agent_token(
        self, creds: LiveKitCredentials, *, slug: str, name: str, room: str, ttl_s: int, client_id: str | None = None
    ) -> str:
        return f"agent-token:{slug}:{room}"

    async def aclose(self) -> None:
        self.closed = True


class DictTenantStore:
    """Tenants in a dict: {client: [agents]}; `fail` makes every lookup raise it."""

    def __init__(self, tenants: dict[Client, list[Agent]]) -> None:
        self.clients = {c.id: c for c in tenants}
        self.agents = {c.id: {a.slug: a for a in agents} for c, agents in tenants.items()}
        self.fail: Exception | None = None
        self.closed = False

    def _check(self) -> None:
        if self.fail is not None:
            raise self.fail

    async def get_client(self, client_id: str) -> Client:
        self._check()
        if client_id not in self.clients:
            raise unknown_client(client_id)
        return self.clients[client_id]

    async def get_agent(self, client: Client, slug: str) -> Agent:
        self._check()
        agents = self.agents.get(client.id, {})
        if slug not in agents:
            raise unknown_agent(client, slug, list(agents))
        return agents[slug]

    async def get_agent_by_id(self, client: Client, agent_id: str) -> Agent:
        self._check()
        for agent in self.agents.get(client.id, {}).values():
            if agent.id == agent_id:
                return agent
        raise unknown_agent_id(client, agent_id)

    async def list_agent_slugs(self, client: Client) -> list[str]:
        self._check()
        return sorted(self.agents.get(client.id, {}))

    async def clients_for_livekit_key(self, api_key: str) -> list[Client]:
        self._check()
        return [c for c in self.clients.values() if c.livekit.api_key == api_key]

    async def invalidate(self, client_id: str | None = None) -> int:
        return 0

    async def aclose(self) -> None:
        self.closed = True


CREDS = LiveKitCredentials(url="ws://127.0.0.1:7880", api_key="fakekey", api_secret="fake-secret-" + "x" * 32)
CLIENT = Client(id="c1", name="Client One", livekit=CREDS)
OTHER = Client(id="c2", name="Client Two", livekit=CREDS)
FARAH = Agent(id="agent-farah", slug="farah", name="Farah", greeting="Hi")
CLARENCE = Agent(id="agent-clarence", slug="clarence-coherence", name="Clarence Coherence")


def tenants() -> DictTenantStore:
    return DictTenantStore({CLIENT: [FARAH, CLARENCE], OTHER: [FARAH]})


@asynccontextmanager
async def fake_app(settings: Settings | None = None, **adapters: Any) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    """The real app (routes, auth, error mapping, engine) over the fake adapters, called in-process.

    Yields the HTTP client and the app's engine (its adapters are the fakes: `engine.runtime` etc.).
    """
    from api.app import create_app

    settings = settings or Settings(scope="unit", reconcile_enabled=False, usage_sampling_enabled=False,
                                    docker_events_enabled=False)
    parts = {"runtime": FakeRuntime(), "livekit": FakeRooms(), "tenants": tenants(), **adapters}
    app = create_app(settings, **parts)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
            yield client, app.state.engine
