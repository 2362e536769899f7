"""/api/v1/rooms...: a client's own rooms and agents, with its own key (an admin key names the client).

List the rooms, read one room's agents (starting / joined / in grace / crashed / gave up, with reasons),
wait until they joined (long-poll), stop one agent or close the room. Only this deployment's containers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request

from orchestrator.rules import ownership
from orchestrator.rules.agent_states import AgentPhase, agent_status
from orchestrator.core.errors import InvalidInput, LimitExceeded, NotFound, OrchestratorError
from orchestrator.core.models import ContainerInfo
from orchestrator.rules.naming import Label, clean_slug, key_from_labels, validate_room
from orchestrator.rules.rooms import grace_remaining
from orchestrator.services.signing_key import signing_key

from api.auth import Principal
from api.deps import OperationsDep, PrincipalDep, RuntimeDep, SettingsDep, TenantsDep
from api.responses import AgentStateOut, ClientRoomOut, ClientRoomsOut, CloseOut, StoppedOut, WaitOut
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/rooms", tags=["rooms"],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 404, 422, 429, 503)})  # 429: too many wrong keys from one address

ClientQuery = Annotated[str | None, Query(min_length=1, max_length=128, description="required with an admin key; a client key implies its own")]
RoomPath = Annotated[str, Path(min_length=1, max_length=128, description="the room name")]
SETTLED = (AgentPhase.joined, AgentPhase.in_grace)
FINAL = (AgentPhase.gave_up, AgentPhase.stopped, AgentPhase.stopping)


def _client(principal: Principal, client_id: str | None) -> str:
    cid = client_id or principal.client_id
    if cid is None:
        raise InvalidInput("client_id is required when the API key is not bound to one client", details={"field": "client_id"})
    principal.require_client(cid)
    return cid


def _room(room: str) -> str:
    try:
        return validate_room(room)
    except InvalidInput as exc:
        raise InvalidInput(exc.message, details={"field": "room"}) from None


async def _containers(runtime: RuntimeDep, settings: SettingsDep, client_id: str, room: str | None = None) -> list[ContainerInfo]:
    return [
        c for c in await runtime.list_managed(scope=settings.scope)
        if c.labels.get(Label.CLIENT_ID) == client_id and (room is None or c.labels.get(Label.ROOM) == room)
    ]


def _view(request: Request, client_id: str, room: str, containers: list[ContainerInfo], *,
          humans: frozenset[str] | None = None, in_room: frozenset[str] | None = None) -> ClientRoomOut:
    """One room as its client sees it: the registry's state, each agent's phase and reason."""
    reconciler = request.app.state.reconciler
    settings = request.app.state.settings
    now = request.app.state.engine.clock()  # the engine's one clock (tests may pass their own)
    tracked = reconciler.registry.rooms.get((client_id, room))
    by_slug: dict[str, ContainerInfo] = {}
    for c in sorted(containers, key=lambda c: c.created_at or now):
        if (key := key_from_labels(c.labels)) is not None:
            by_slug[key.agent_slug] = c  # several for one key (a duplicate being removed): the newest speaks
    gave_up = {k.agent_slug: r for k, r in reconciler.gave_up.items() if (k.client_id, k.room) == (client_id, room)}
    restarts = {k.agent_slug: r for k, r in reconciler.restarts.items() if (k.client_id, k.room) == (client_id, room)}
    agents = [
        AgentStateOut(**vars(agent_status(slug, by_slug.get(slug), room=tracked, in_room=in_room, restart=restarts.get(slug),
                                          gave_up=gave_up.get(slug), now=now, grace_s=settings.grace_period_s)))
        for slug in sorted(set(by_slug) | set(gave_up))
    ]
    return ClientRoomOut(
        client_id=client_id, room=room, state=tracked.state.value if tracked else "starting",
        humans=sorted(humans if humans is not None else (tracked.humans if tracked else ())), agents=agents,
        grace_remaining_s=grace_remaining(tracked, now=now, grace_s=settings.grace_period_s) if tracked else None,
    )


async def _fresh(request: Request, tenants: TenantsDep, client_id: str, room: str) -> tuple[frozenset[str] | None, frozenset[str] | None]:
    """Humans and agents LiveKit lists right now; (None, None) when LiveKit cannot say (the registry answers then)."""
    try:
        client = await tenants.get_client(client_id)
        view = (await request.app.state.livekit.observe_rooms(client.livekit, names=[room]))[room]
    except OrchestratorError:
        return None, None
    if view.exists and ownership.someone_elses(signing_key(request.app.state.settings), view.metadata, client_id=client_id, room=room):
        return frozenset(), frozenset()  # a room of this name that is provably another tenant's: none of its people
    return view.humans, view.agents


async def _one_room(request: Request, runtime: RuntimeDep, settings: SettingsDep, tenants: TenantsDep,
                    client_id: str, room: str) -> ClientRoomOut:
    containers = await _containers(runtime, settings, client_id, room)
    if not containers and not any((k.client_id, k.room) == (client_id, room) for k in request.app.state.reconciler.gave_up):
        raise NotFound(f"no agent of client '{client_id}' in room '{room}' on this deployment")
    humans, in_room = await _fresh(request, tenants, client_id, room)
    return _view(request, client_id, room, containers, humans=humans, in_room=in_room)


@router.get("", response_model=ClientRoomsOut)
async def list_client_rooms(
    request: Request, principal: PrincipalDep, runtime: RuntimeDep, settings: SettingsDep, client_id: ClientQuery = None,
) -> ClientRoomsOut:
    """The client's rooms that hold an agent of this deployment, each agent with its phase (from the tracked room state)."""
    cid = _client(principal, client_id)
    containers = await _containers(runtime, settings, cid)
    rooms = sorted({c.labels.get(Label.ROOM, "") for c in containers} - {""})
    return ClientRoomsOut(rooms=[_view(request, cid, r, [c for c in containers if c.labels.get(Label.ROOM) == r]) for r in rooms])


@router.get("/{room}", response_model=ClientRoomOut)
async def get_client_room(
    request: Request, room: RoomPath, principal: PrincipalDep, runtime: RuntimeDep, settings: SettingsDep,
    tenants: TenantsDep, client_id: ClientQuery = None,
) -> ClientRoomOut:
    """One room: its state, humans, and each agent's phase with the reason (LiveKit is asked now)."""
    return await _one_room(request, runtime, settings, tenants, _client(principal, client_id), _room(room))


@router.get("/{room}/wait", response_model=WaitOut)
async def wait_for_joined(
    request: Request, room: RoomPath, principal: PrincipalDep, runtime: RuntimeDep, settings: SettingsDep,
    tenants: TenantsDep, client_id: ClientQuery = None,
    agent: Annotated[str | None, Query(max_length=200, description="only this agent slug; default every agent in the room")] = None,
    timeout_s: Annotated[float, Query(ge=0, le=60, description="longest wait; the answer comes as soon as the agents joined")] = 20.0,
) -> WaitOut:
    """Long-poll until the agents joined (or are in grace). `reached: false` after the timeout, or at once when an
    agent gave up or stopped; the body then says why. At most `max_waiters_per_client` at once per client (429)."""
    cid, name = _client(principal, client_id), _room(room)
    slug = clean_slug(agent) if agent else None
    with _waiter(request, cid, settings.max_waiters_per_client):
        started = time.monotonic()
        asked_livekit = started
        view = await _one_room(request, runtime, settings, tenants, cid, name)  # once: the engine and LiveKit now
        while True:
            agents = [a for a in view.agents if slug is None or a.agent_slug == slug]
            reached = bool(agents) and all(a.phase in SETTLED for a in agents)
            waited = time.monotonic() - started
            if reached or any(a.phase in FINAL for a in agents) or waited >= timeout_s:
                return WaitOut(**view.model_dump(), reached=reached, waited_s=round(waited, 3))
            await asyncio.sleep(min(_WAIT_TICK_S, max(0.0, timeout_s - waited)))
            # Then from the watch-fed view and the room registry (webhooks, passes): no engine list per tick, and
            # LiveKit asked at most every _LIVEKIT_EVERY_S, only while its webhooks are not arriving for this client.
            humans = in_room = None
            if cid not in request.app.state.reconciler.registry.webhooks_seen and time.monotonic() - asked_livekit >= _LIVEKIT_EVERY_S:
                asked_livekit = time.monotonic()
                humans, in_room = await _fresh(request, tenants, cid, name)
            view = _view(request, cid, name, await _watched(request, runtime, settings, cid, name), humans=humans, in_room=in_room)


_WAIT_TICK_S = 0.25
_LIVEKIT_EVERY_S = 2.0


async def _watched(request: Request, runtime: RuntimeDep, settings: SettingsDep, client_id: str, room: str) -> list[ContainerInfo]:
    """The room's containers from the watch-fed view once it is synced; one labelled list otherwise."""
    view = request.app.state.engine.view
    if not view.synced:
        return await _containers(runtime, settings, client_id, room)
    return [c for c in view.state.containers()
            if c.labels.get(Label.CLIENT_ID) == client_id and c.labels.get(Label.ROOM) == room]


@contextmanager
def _waiter(request: Request, client_id: str, cap: int) -> Iterator[None]:
    """Count one long-poll of `client_id`; over `cap` at once, 429 (one tenant's waits cannot crowd out the others')."""
    waiting: dict[str, int] | None = getattr(request.app.state, "room_waiters", None)
    if waiting is None:  # one per app, made on first use
        waiting = request.app.state.room_waiters = {}
    if waiting.get(client_id, 0) >= cap:
        raise LimitExceeded(
            f"client '{client_id}' already has {cap} room waits open (max_waiters_per_client); "
            "wait for one to answer, or poll GET /api/v1/rooms/{room} instead",
            retry_after=1, details={"rule": "max_waiters_per_client"},
        )
    waiting[client_id] = waiting.get(client_id, 0) + 1
    try:
        yield
    finally:
        waiting[client_id] -= 1
        if not waiting[client_id]:
            del waiting[client_id]


@router.delete("/{room}/agents/{agent_slug}", response_model=StoppedOut)
async def stop_agent(
    room: RoomPath, agent_slug: Annotated[str, Path(min_length=1, max_length=200)],
    principal: PrincipalDep, operations: OperationsDep, client_id: ClientQuery = None,
) -> StoppedOut:
    """Stop one agent in a room now: it leaves the room and its container is removed (the room stays open)."""
    cid, name, slug = _client(principal, client_id), _room(room), clean_slug(agent_slug)
    stopped = await operations.stop_agent(cid, name, slug)
    return StoppedOut(client_id=cid, room=name, agent_slug=slug, stopped=stopped)


@router.post("/{room}/close", response_model=CloseOut)
async def close_client_room(
    room: RoomPath, principal: PrincipalDep, operations: OperationsDep, client_id: ClientQuery = None,
) -> CloseOut:
    """Close the room now: every agent of this deployment in it is stopped and the LiveKit room is deleted."""
    cid, name = _client(principal, client_id), _room(room)
    report = await operations.close_room(cid, name, reason="closed by its client")
    return CloseOut.model_validate({"closed": {"client_id": cid, "room": name}, "pass": report.to_dict()})
