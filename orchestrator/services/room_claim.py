"""The room claim: a trigger's LiveKit room is created, or an existing one accepted only when it is this client's."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

from orchestrator.core.errors import Conflict, DependencyUnavailable, OrchestratorError
from orchestrator.core.locks import KeyedLocks
from orchestrator.core.models import Agent, Client, ContainerKey
from orchestrator.livekit.service import RoomService
from orchestrator.rules import ownership, room_metadata
from orchestrator.rules.rooms import RoomRegistry, RoomState, claim_may_follow, known_to_exist
from orchestrator.services.signing_key import signing_key
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
        # Per (client, room): the claim that follows a trigger's answer; triggers repeated while it is pending share it.
        self._following: dict[tuple[str, str], asyncio.Task[None]] = {}
        # LiveKit URLs whose last claim failed to reach them: until one succeeds, every trigger there claims first
        # (and gets the 503 that says LiveKit is down) instead of answering from what we knew before.
        self._unreachable: set[str] = set()

    @asynccontextmanager
    async def claimed(self, key: ContainerKey, *, client: Client, agent: Agent) -> AsyncIterator[None]:
        """Hold the room's lock with the room claimed (ours, with timeouts covering the grace period).

        A trigger repeated moments after our own claim, before anyone joined (a page reload), claims right after
        the block instead (rules.rooms.claim_may_follow): its answer does not wait on LiveKit, and the claim, still
        under the room's lock, stamps the trigger long before any close of the room can come due."""
        s = self._settings
        async with self.locks.hold((key.client_id, key.room)):
            # Inside the lock: a close that held it may just have deleted the room.
            tracked = self._rooms.get(client.id, key.room) if self._rooms is not None else None
            now = self._clock()
            known = (
                tracked is not None
                # Only a room in a call: any other may be closing in another process, whose close looks for
                # the trigger stamp that only claim() writes.
                and tracked.state is RoomState.ACTIVE
                and known_to_exist(tracked, now=now, trust_s=s.room_trust_s)
            )
            follow = not known and client.livekit.url not in self._unreachable and claim_may_follow(
                tracked, now=now, trust_s=s.room_trust_s, grace_s=s.grace_period_s, startup_timeout_s=s.agent_startup_timeout_s)
            if not known and not follow:
                await self._claim_and_confirm(key, client=client, agent=agent)
            yield
        if follow and (room_key := (key.client_id, key.room)) not in self._following:
            task = asyncio.create_task(self._follow(key, client=client, agent=agent), name=f"room-claim-{key.room}")
            self._following[room_key] = task
            task.add_done_callback(lambda _: self._following.pop(room_key, None))

    async def _claim_and_confirm(self, key: ContainerKey, *, client: Client, agent: Agent) -> None:
        try:
            await self.claim(key, client=client, agent=agent)
        except DependencyUnavailable:
            self._unreachable.add(client.livekit.url)
            raise
        self._unreachable.discard(client.livekit.url)
        if self._rooms is not None:
            self._rooms.confirm(client.id, key.room, now=self._clock())

    async def _follow(self, key: ContainerKey, *, client: Client, agent: Agent) -> None:
        """The claim of a trigger that already answered: under the room's lock, as any claim; a failure is logged
        and makes the room's next trigger claim first (the agent answered with is running either way)."""
        try:
            async with self.locks.hold((key.client_id, key.room)):
                await self._claim_and_confirm(key, client=client, agent=agent)
        except OrchestratorError as exc:
            if self._rooms is not None:
                self._rooms.unconfirm(client.id, key.room)
            log.warning("room %s: the claim after a repeated trigger failed: %s", key.room, exc,
                        extra={"client_id": client.id, "room": key.room})

    async def settled(self) -> None:
        """Wait for the room claims that follow answered triggers (shutdown, tests)."""
        while self._following:
            await asyncio.gather(*self._following.values(), return_exceptions=True)

    async def claim(self, key: ContainerKey, *, client: Client, agent: Agent) -> None:
        """Create the room, or accept an existing one only when it is provably this client's.

        Anyone with an API key of the LiveKit server can write room metadata, so the `client_id` there is a
        claim; ownership is the stamp only this deployment's key makes (rules/ownership). A room stamped for
        another client, or unproven (no stamp, or one that does not verify) on a server other clients use too,
        is refused. On a server of this client alone, an unproven room claiming nobody else is its own: stamped
        and claimed.
        """
        s = self._settings
        signer = signing_key(s)
        proof = ownership.stamp(signer, client_id=client.id, room=key.room, created_at=self._clock())
        ours = room_metadata.for_new_room(agent=agent, client_id=client.id, stamp=proof)
        room = await self._livekit.ensure_room(
            client.livekit, room=key.room, metadata=ours,
            empty_timeout_s=s.room_empty_timeout_s, departure_timeout_s=s.room_departure_timeout_s,
        )
        proven = ownership.verified_owner(signer, room.metadata, room=key.room)
        if proven == client.id:
            if room_metadata.grace_started(room.metadata) is not None:
                # The room is in grace, so a pass of another process may be about to close it: stamp the
                # trigger where every process looks before closing (executor.Executor.close_room).
                stamped = room_metadata.with_trigger(room.metadata, self._clock())
                if stamped is not None:
                    await self._livekit.update_room_metadata(client.livekit, room=key.room, metadata=stamped)
            return
        named = room_metadata.owner(room.metadata)
        forged = ownership.stamped_by(room.metadata)
        # On a server no other served client uses, an unproven room that claims nobody else is this client's: made
        # outside the orchestrator, before stamps, or stamped under a key this deployment no longer has (a
        # re-created container that generated a new one). It is stamped afresh.
        if proven is None and named in (None, client.id) and not await self.shared_project(client):
            if (claimed := room_metadata.claimed(room.metadata, ours=ours)) is not None:
                await self._livekit.update_room_metadata(client.livekit, room=key.room, metadata=claimed)
            return
        why = (
            "another client" if proven is not None
            else "a room whose ownership stamp does not verify" if forged
            else "a room that claims this client without the orchestrator's ownership stamp" if named == client.id
            else "another client's claim without the orchestrator's ownership stamp" if named is not None
            else "a room the orchestrator did not create"
        )
        log.warning(
            "refused room %s: it is %s", key.room, why,
            extra={"client_id": client.id, "room": key.room, "room_owner": proven or "-", "room_claimed_by": named or "-"},
        )
        raise Conflict(
            f"room_name '{key.room}' is already in use on this LiveKit server by {why}; "
            "choose another room_name, or omit it to get a fresh room",
            details={"field": "room_name"},
        )

    async def shared_project(self, client: Client) -> bool:
        """Whether another client uses the same LiveKit server: with the same API key, or (where the store can
        list its clients) with a key of its own — every key of a server reaches all of its rooms."""
        same_key = await self._tenants.clients_for_livekit_key(client.livekit.api_key)
        if any(c.id != client.id and c.livekit.url == client.livekit.url for c in same_key):
            return True
        lister = getattr(self._tenants, "list_clients", None)
        return lister is not None and any(c.id != client.id and c.livekit.url == client.livekit.url for c in await lister())
