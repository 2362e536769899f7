"""The room claim: a trigger's LiveKit room is created, or an existing one accepted only when it is this client's."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from orchestrator.core.errors import Conflict
from orchestrator.core.locks import KeyedLocks
from orchestrator.core.models import Agent, Client, ContainerKey
from orchestrator.livekit.service import RoomService
from orchestrator.rules import room_metadata
from orchestrator.rules.rooms import RoomRegistry, RoomState, known_to_exist
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

log = logging.getLogger(__name__)


class RoomClaims:
    """Per (client, room) lock, the registry's shortcut for a room known to be live, and the claim itself."""

    def __init__(
        self, *, settings: Settings, tenants: TenantStore, livekit: RoomService, clock: Callable[[], datetime],
        rooms: RoomRegistry | None,
    ) -> None:
        self._settings = settings
        self._tenants = tenants
        self._livekit = livekit
        self._clock = clock
        self._rooms = rooms  # a live room confirmed recently is not created again
        # Per (client, room): a trigger claims its room under it, a closing pass closes the room under it,
        # so a trigger never reuses a container that a close is about to remove (reconciler._close_room).
        self.locks = KeyedLocks()

    @asynccontextmanager
    async def claimed(self, key: ContainerKey, *, client: Client, agent: Agent) -> AsyncIterator[None]:
        """Hold the room's lock with the room claimed (ours, with timeouts covering the grace period)."""
        async with self.locks.hold((key.client_id, key.room)):
            # Inside the lock: a close that held it may just have deleted the room.
            tracked = self._rooms.get(client.id, key.room) if self._rooms is not None else None
            known = (
                tracked is not None
                # Only a room in a call: any other may be closing in another process, whose close looks for
                # the trigger stamp that only claim() writes.
                and tracked.state is RoomState.ACTIVE
                and known_to_exist(tracked, now=self._clock(), trust_s=self._settings.room_trust_s)
            )
            if not known:
                await self.claim(key, client=client, agent=agent)
                if self._rooms is not None:
                    self._rooms.confirm(client.id, key.room, now=self._clock())
            yield

    async def claim(self, key: ContainerKey, *, client: Client, agent: Agent) -> None:
        """Create the room, or accept an existing one only when its metadata names this client.

        Tenants may share one LiveKit project: a room named by another client's metadata, or by none
        (made outside the orchestrator, e.g. auto-created by a join) on a shared project, is refused.
        On a project of this client alone, an unnamed room is its own and is claimed.
        """
        s = self._settings
        ours = room_metadata.for_new_room(agent=agent, client_id=client.id)
        room = await self._livekit.ensure_room(
            client.livekit, room=key.room, metadata=ours,
            empty_timeout_s=s.room_empty_timeout_s, departure_timeout_s=s.room_departure_timeout_s,
        )
        owner = room_metadata.owner(room.metadata)
        if owner == client.id:
            if room_metadata.grace_started(room.metadata) is not None:
                # The room is in grace, so a pass of another process may be about to close it: stamp the
                # trigger where every process looks before closing (reconciler._close_room).
                stamped = room_metadata.with_trigger(room.metadata, self._clock())
                if stamped is not None:
                    await self._livekit.update_room_metadata(client.livekit, room=key.room, metadata=stamped)
            return
        if owner is None and not await self.shared_project(client):
            if (claimed := room_metadata.claimed(room.metadata, ours=ours)) is not None:
                await self._livekit.update_room_metadata(client.livekit, room=key.room, metadata=claimed)
            return
        log.warning(
            "refused room %s: it belongs to %s", key.room, "another client" if owner else "no client of ours",
            extra={"client_id": client.id, "room": key.room, "room_owner": owner or "-"},
        )
        raise Conflict(
            f"room_name '{key.room}' is already in use on this LiveKit project by "
            f"{'another client' if owner else 'a room the orchestrator did not create'}; "
            "choose another room_name, or omit it to get a fresh room",
            details={"field": "room_name"},
        )

    async def shared_project(self, client: Client) -> bool:
        """Whether another client uses the same LiveKit project (url and API key)."""
        same_key = await self._tenants.clients_for_livekit_key(client.livekit.api_key)
        return any(c.id != client.id and c.livekit.url == client.livekit.url for c in same_key)
