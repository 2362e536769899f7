"""When a trigger for a room that already has its agent asks LiveKit again (RoomClaims, fake LiveKit boundary)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from orchestrator.core.models import ContainerKey
from orchestrator.rules import room_metadata
from orchestrator.rules.rooms import AgentLaunched, ParticipantJoined, RoomRegistry
from orchestrator.services.room_claim import RoomClaims
from orchestrator.settings import Settings
from devtools.fakes import FARAH, T0, FakeRooms, tenants

KEY = ContainerKey(client_id="c1", agent_slug="farah", room="r1")


async def _calls_of_second_trigger(*, after_s: float, grace_s: float = 60.0, agent_joined: bool = False,
                                   human_joined: bool = False, unconfirmed: bool = False) -> list[str]:
    """Claim once at T0, change the room as LiveKit's webhooks would, claim again `after_s` later: LiveKit calls made."""
    now = [T0]
    store, lk, registry = tenants(), FakeRooms(), RoomRegistry()
    claims = RoomClaims(settings=Settings(scope="unit", grace_period_s=grace_s), tenants=store, livekit=lk,
                        clock=lambda: now[0], rooms=registry)
    client = await store.get_client("c1")
    registry.apply("c1", "r1", AgentLaunched(), now=T0)
    async with claims.claimed(KEY, client=client, agent=FARAH):
        pass
    if agent_joined:
        registry.apply("c1", "r1", ParticipantJoined("agent-farah", is_agent=True), now=T0)  # no human: grace
    if human_joined:
        registry.apply("c1", "r1", ParticipantJoined("u", is_agent=False), now=T0)
    if unconfirmed:
        registry.unconfirm("c1", "r1")  # its agent died: the room may be gone with it
    lk.calls.clear()
    now[0] = T0 + timedelta(seconds=after_s)
    async with claims.claimed(KEY, client=client, agent=FARAH):
        pass
    return [what for what, _ in lk.calls]


CASES = [
    ("page reload while the agent starts", dict(after_s=1), []),
    ("page reload in grace (agent joined, no human yet)", dict(after_s=1, agent_joined=True), []),
    ("again after the reclaim window, in grace: created and trigger-stamped afresh", dict(after_s=6, agent_joined=True),
     ["ensure_room"]),
    ("again after the window while starting", dict(after_s=6), ["ensure_room"]),
    ("in a call, long after the claim (the room is confirmed by its webhooks)", dict(after_s=30, agent_joined=True, human_joined=True), []),
    ("its agent died since: LiveKit is asked", dict(after_s=1, unconfirmed=True), ["ensure_room"]),
    ("no grace period: every trigger asks", dict(after_s=0.01, grace_s=0), ["ensure_room"]),
    ("a short grace shortens the window (grace 12 s: 1 s)", dict(after_s=1.5, grace_s=12), ["ensure_room"]),
]


@pytest.mark.parametrize("title, kw, expected", CASES, ids=[c[0] for c in CASES])
async def test_second_trigger_asks_livekit_only_when_needed(title: str, kw: dict, expected: list[str]) -> None:
    assert await _calls_of_second_trigger(**kw) == expected


async def test_a_room_in_grace_is_trigger_stamped_when_claimed_after_the_window() -> None:
    """The stamp other processes look for before closing is still written (only rate-limited)."""
    now = [T0]
    store, lk, registry = tenants(), FakeRooms(), RoomRegistry()
    claims = RoomClaims(settings=Settings(scope="unit"), tenants=store, livekit=lk, clock=lambda: now[0], rooms=registry)
    client = await store.get_client("c1")
    async with claims.claimed(KEY, client=client, agent=FARAH):
        pass
    creds_key = (client.livekit.api_key, "r1")
    snap = lk.rooms[creds_key]
    lk.rooms[creds_key] = replace(snap, metadata=room_metadata.with_grace(snap.metadata, T0) or "")
    registry.apply("c1", "r1", ParticipantJoined("agent-farah", is_agent=True), now=T0)
    now[0] = T0 + timedelta(seconds=10)
    async with claims.claimed(KEY, client=client, agent=FARAH):
        pass
    assert room_metadata.triggered(lk.rooms[creds_key].metadata) == now[0]
