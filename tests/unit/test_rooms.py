"""Table tests for the pure room state machine."""

from __future__ import annotations

from dataclasses import replace
from collections.abc import Iterable
from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.rules import room_metadata
from orchestrator.rules.rooms import (
    AgentLaunched,
    CloseRequested,
    Due,
    ParticipantJoined,
    ParticipantLeft,
    Room,
    RoomFinished,
    RoomObserved,
    RoomSnapshot,
    RoomState,
    apply,
    deadline,
    due,
    grace_remaining,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=10)
E, S, A, G, C = RoomState.EMPTY, RoomState.STARTING, RoomState.ACTIVE, RoomState.GRACE_PERIOD, RoomState.CLOSING
H = ParticipantJoined("alice", is_agent=False)
HL = ParticipantLeft("alice", is_agent=False)
AJ = ParticipantJoined("agent-farah", is_agent=True)
AL = ParticipantLeft("agent-farah", is_agent=True)


def observed(
    *, exists: bool, humans: frozenset[str] = frozenset(), agents: frozenset[str] = frozenset(),
    has_containers: bool = True, launched_at: datetime | None = None, grace_started_at: datetime | None = None,
) -> RoomObserved:
    """A LiveKit snapshot (the grace start in our metadata, as the reconciler sees it) plus container facts."""
    metadata = room_metadata.with_grace("{}", grace_started_at) or "" if grace_started_at else ""
    snapshot = RoomSnapshot(exists=exists, humans=humans, agents=agents, metadata=metadata)
    return RoomObserved(snapshot, has_containers=has_containers, launched_at=launched_at)



def room(state: RoomState, *, humans: Iterable[str] = (), agents: Iterable[str] = (),
         since: datetime | None = T0) -> Room:
    return Room(client_id="c", name="r", state=state, humans=frozenset(humans), agents=frozenset(agents),
                since=since if state in (S, G, C) else None)


CASES = [
    # (name, room before, event, state after, since after)
    ("launch starts the startup clock", room(E), AgentLaunched(), S, T1),
    ("agent joins, human already there → active", room(S, humans={"alice"}), AJ, A, None),
    ("agent joins first, no human yet → grace clock runs", room(S), AJ, G, T1),
    ("human joins while agent starting → still starting, clock kept", room(S), H, S, T0),
    ("human joins a room with an agent → active", room(G, agents={"agent-farah"}), H, A, None),
    ("last human leaves → grace starts now", room(A, humans={"alice"}, agents={"agent-farah"}), HL, G, T1),
    ("one of two humans leaves → still active",
     room(A, humans={"alice", "bob"}, agents={"agent-farah"}), HL, A, None),
    ("rejoin within grace cancels it", room(G, agents={"agent-farah"}), H, A, None),
    ("a new trigger during grace restarts the grace clock", room(G, agents={"agent-farah"}), AgentLaunched(), G, T1),
    ("agent crash with humans → waiting for an agent again",
     room(A, humans={"alice"}, agents={"agent-farah"}), AL, S, T1),
    ("agent leaves during grace → grace clock kept", room(G, agents={"agent-farah"}), AL, G, T0),
    ("room finished → closing", room(A, humans={"alice"}, agents={"agent-farah"}), RoomFinished(), C, T1),
    ("operator close → closing", room(G), CloseRequested("ops"), C, T1),
    ("closing is terminal for participants", room(C), H, C, T0),
    ("a new trigger revives a closing room", room(C), AgentLaunched(), S, T1),
    ("identities are not parsed: a human called agent-x is a human",
     room(G, agents={"agent-farah"}), ParticipantJoined("agent-x", is_agent=False), A, None),
]


@pytest.mark.parametrize(("name", "before", "event", "state", "since"), CASES, ids=[c[0] for c in CASES])
def test_transitions(name: str, before: Room, event: object, state: RoomState, since: datetime | None) -> None:
    after = apply(before, event, now=T1)  # type: ignore[arg-type]
    assert (after.state, after.since) == (state, since)


OBSERVED = [
    # (name, registry before, observation, state after, since after)
    ("rebuilt after restart: human + agent → active", room(E),
     observed(exists=True, humans=frozenset({"alice"}), agents=frozenset({"agent-farah"})), A, None),
    ("rebuilt: agent alone, grace unknown → grace from observation (never earlier)", room(E),
     observed(exists=True, agents=frozenset({"agent-farah"})), G, T1),
    ("rebuilt: agent alone, grace persisted in metadata → that start", room(E),
     observed(exists=True, agents=frozenset({"agent-farah"}), grace_started_at=T0), G, T0),
    ("persisted grace in the future is clamped to now", room(E),
     observed(exists=True, agents=frozenset({"agent-farah"}), grace_started_at=T1 + timedelta(hours=1)), G, T1),
    ("rebuilt: container but nobody joined → starting since the container's creation", room(E),
     observed(exists=True, launched_at=T0), S, T0),
    ("running grace is not restarted by an observation", room(G, agents={"agent-farah"}),
     observed(exists=True, agents=frozenset({"agent-farah"}), grace_started_at=T1), G, T0),
    ("missed participant_left: observation starts grace", room(A, humans={"alice"}, agents={"agent-farah"}),
     observed(exists=True, agents=frozenset({"agent-farah"})), G, T1),
    ("missed rejoin: observation cancels grace", room(G, agents={"agent-farah"}),
     observed(exists=True, humans=frozenset({"alice"}), agents=frozenset({"agent-farah"})), A, None),
    ("room gone from LiveKit → closing", room(A, humans={"alice"}, agents={"agent-farah"}),
     observed(exists=False), C, T1),
]


@pytest.mark.parametrize(("name", "before", "obs", "state", "since"), OBSERVED, ids=[c[0] for c in OBSERVED])
def test_observation(name: str, before: Room, obs: RoomObserved, state: RoomState, since: datetime | None) -> None:
    after = apply(before, obs, now=T1)
    assert (after.state, after.since) == (state, since)


DUE = [
    ("grace not yet over", room(G), 59.9, None),
    ("grace over exactly at 60 s", room(G), 60.0, Due.GRACE_EXPIRED),
    ("active never due", room(A, humans={"a"}, agents={"b"}), 3600, None),
    ("startup within timeout", room(S), 29, None),
    ("startup timed out", room(S), 30, Due.STARTUP_TIMEOUT),
]


@pytest.mark.parametrize(("name", "r", "after_s", "expected"), DUE, ids=[c[0] for c in DUE])
def test_due(name: str, r: Room, after_s: float, expected: Due | None) -> None:
    assert due(r, now=T0 + timedelta(seconds=after_s), grace_s=60, startup_timeout_s=30) is expected


def test_startup_timeout_zero_disables() -> None:
    assert due(room(S), now=T0 + timedelta(days=1), grace_s=60, startup_timeout_s=0) is None


def test_deadline_and_remaining() -> None:
    assert deadline(room(G), grace_s=60, startup_timeout_s=30) == T0 + timedelta(seconds=60)
    assert deadline(room(S), grace_s=60, startup_timeout_s=30) == T0 + timedelta(seconds=30)
    assert grace_remaining(room(G), now=T1, grace_s=60) == 50
    assert grace_remaining(room(A), now=T1, grace_s=60) is None


def test_grace_metadata_round_trip() -> None:
    md = room_metadata.with_grace('{"agent_slug": "farah"}', T0)
    assert md is not None and room_metadata.grace_started(md) == T0 and '"agent_slug": "farah"' in md
    assert room_metadata.grace_started(room_metadata.with_grace(md, None) or "") is None
    assert room_metadata.with_grace("not json", T0) is None  # someone else's metadata is left alone
    assert room_metadata.grace_started("") is None and room_metadata.grace_started("[1]") is None

# ---- rooms kept by webhooks: when a trigger may skip CreateRoom, when the reconciler must poll ----------

from orchestrator.rules.rooms import RoomRegistry, claim_may_follow, known_to_exist, needs_poll  # noqa: E402


def _room(state: RoomState, *, confirmed_s: float | None = None, observed_s: float | None = None) -> Room:
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
    at = lambda s: t0 - timedelta(seconds=s) if s is not None else None  # noqa: E731
    return Room(client_id="c", name="r", state=state, confirmed_at=at(confirmed_s), observed_at=at(observed_s))


KNOWN = [
    ("live and confirmed recently", _room(RoomState.ACTIVE, confirmed_s=5), True),
    ("starting, confirmed by our CreateRoom", _room(RoomState.STARTING, confirmed_s=1), True),
    ("confirmed too long ago", _room(RoomState.ACTIVE, confirmed_s=61), False),
    ("never confirmed (a launch alone proves nothing)", _room(RoomState.STARTING), False),
    ("closing", _room(RoomState.CLOSING, confirmed_s=1), False),
    ("empty", _room(RoomState.EMPTY, confirmed_s=1), False),
]


@pytest.mark.parametrize("title, room, expected", KNOWN, ids=[k[0] for k in KNOWN])
def test_known_to_exist(title: str, room: Room, expected: bool) -> None:
    assert known_to_exist(room, now=datetime(2026, 1, 1, tzinfo=timezone.utc), trust_s=60) is expected


def _since(room: Room, since_s: float) -> Room:
    return replace(room, since=datetime(2026, 1, 1, tzinfo=timezone.utc) - timedelta(seconds=since_s))


FOLLOW = [
    ("a reload 1 s after our claim, agent not joined yet", _since(_room(RoomState.STARTING, confirmed_s=1), 1), True),
    ("a reload after the agent joined alone (its grace clock runs)", _since(_room(RoomState.GRACE_PERIOD, confirmed_s=1), 1), True),
    ("our claim 6 s ago: claim first", _since(_room(RoomState.STARTING, confirmed_s=6), 6), False),
    ("grace half run (a close may come due soon): claim first", _since(_room(RoomState.GRACE_PERIOD, confirmed_s=1), 16), False),
    ("never confirmed by us", _since(_room(RoomState.STARTING), 1), False),
    ("closing", _since(_room(RoomState.CLOSING, confirmed_s=1), 1), False),
    ("in a call: known_to_exist's, not this rule's", _room(RoomState.ACTIVE, confirmed_s=1), False),
    ("unknown room", None, False),
]


@pytest.mark.parametrize("title, room, expected", FOLLOW, ids=[f[0] for f in FOLLOW])
def test_claim_may_follow_the_answer(title: str, room: Room | None, expected: bool) -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert claim_may_follow(room, now=now, trust_s=60, grace_s=60, startup_timeout_s=30) is expected


@pytest.mark.parametrize(("grace_s", "startup_s", "expected"), [
    (0, 30, False),  # no grace period: every close can be due at once
    (60, 0, True),  # startup timeout off: the grace clock alone
    (4, 30, False),  # a 4 s grace: 1 s in is already half of it
])
def test_claim_may_follow_only_far_from_any_close(grace_s: float, startup_s: float, expected: bool) -> None:
    room = _since(_room(RoomState.STARTING, confirmed_s=1), 2)
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert claim_may_follow(room, now=now, trust_s=60, grace_s=grace_s, startup_timeout_s=startup_s) is expected


POLL = [
    ("never seen", None, True, True),
    ("never polled", _room(RoomState.STARTING), True, True),
    ("polled recently, webhooks flowing", _room(RoomState.ACTIVE, observed_s=10), True, False),
    ("polled recently, no webhook ever seen", _room(RoomState.ACTIVE, observed_s=10), False, True),
    ("sweep due", _room(RoomState.ACTIVE, observed_s=120), True, True),
    ("closing: LiveKit decides", _room(RoomState.CLOSING, observed_s=1), True, True),
]


@pytest.mark.parametrize("title, room, flowing, expected", POLL, ids=[p[0] for p in POLL])
def test_needs_poll(title: str, room: Room | None, flowing: bool, expected: bool) -> None:
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert needs_poll(room, now=now, resync_s=120, webhooks_flowing=flowing) is expected


def test_evidence_confirms_and_a_death_unconfirms() -> None:
    reg, now = RoomRegistry(), datetime(2026, 1, 1, tzinfo=timezone.utc)
    reg.apply("c", "r", AgentLaunched(), now=now)
    assert reg.get("c", "r").confirmed_at is None
    reg.confirm("c", "r", now=now)
    assert known_to_exist(reg.get("c", "r"), now=now, trust_s=60)
    reg.unconfirm("c", "r")
    assert not known_to_exist(reg.get("c", "r"), now=now, trust_s=60)
    reg.apply("c", "r", ParticipantJoined(identity="alice", is_agent=False), now=now)
    assert reg.get("c", "r").confirmed_at == now  # a webhook about the room is evidence too
