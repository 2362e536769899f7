"""Table tests for plan(): every reconciler rule, with plain data and no Docker."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.core.models import ContainerInfo, ContainerKey, ContainerStatus, Health
from orchestrator.rules.naming import Label, container_name, retired_name
from orchestrator.rules.planner import (
    DeleteRoom,
    GiveUp,
    Observation,
    RemoveContainer,
    RestartAgent,
    Removal,
    RestartRecord,
    SetRoomMetadata,
    backoff_s,
    next_deadline,
    plan,
    room_close,
)
from orchestrator.rules import room_metadata
from orchestrator.rules.rooms import Room, RoomSnapshot, RoomState
from orchestrator.settings import Settings

NOW = datetime(2025, 1, 1, 12, 0, 0, tzinfo=timezone.utc)
SCOPE = "prod"
S = Settings(scope=SCOPE, grace_period_s=60, agent_startup_timeout_s=30, max_container_lifetime_s=3600,
             restart_backoff_s=2, restart_backoff_max_s=60, restart_max_attempts=3)
KEY = ContainerKey(client_id="c1", agent_slug="farah", room="r1")
RK = ("c1", "r1")
HUMANS = frozenset({"alice"})
AGENT = frozenset({"agent-farah"})


def box(key: ContainerKey = KEY, *, name: str | None = None, status: ContainerStatus = ContainerStatus.running,
        exit_code: int | None = None, health: Health = Health.none, scope: str = SCOPE, age_s: float = 120,
        drop: str | None = None) -> ContainerInfo:
    labels = {
        Label.MANAGED: "true", Label.SCOPE: scope, Label.CLIENT_ID: key.client_id, Label.AGENT_SLUG: key.agent_slug,
        Label.ROOM: key.room, Label.MODE: "voice", Label.CREATED_AT: (NOW - timedelta(seconds=age_s)).isoformat(),
    }
    if drop:
        labels.pop(drop)
    return ContainerInfo(id=f"id-{name or container_name(key)}", name=name or container_name(key), status=status,
                         health=health, labels=labels, exit_code=exit_code)


def room(state: RoomState, *, humans: frozenset[str] = frozenset(), agents: frozenset[str] = frozenset(),
         since_s: float | None = None, key: tuple[str, str] = RK) -> dict[tuple[str, str], Room]:
    since = NOW - timedelta(seconds=since_s) if since_s is not None else None
    return {key: Room(client_id=key[0], name=key[1], state=state, humans=humans, agents=agents, since=since)}


HERE = RoomSnapshot(exists=True, humans=HUMANS, agents=AGENT)


def seen(*containers: ContainerInfo, view: RoomSnapshot | None = HERE,
         agents: dict[str, frozenset[str]] | None = None, unknown: frozenset[str] = frozenset()) -> Observation:
    return Observation(at=NOW, containers=containers, rooms={RK: view} if view else {},
                    agents_by_client=agents if agents is not None else {"c1": frozenset({"farah", "clarence"})},
                    unknown_clients=unknown)


ACTIVE = room(RoomState.ACTIVE, humans=HUMANS, agents=AGENT)
GRACE_VIEW = RoomSnapshot(exists=True, agents=AGENT, metadata=room_metadata.with_grace("{}", NOW - timedelta(seconds=61)) or "")
DUP = box(name="agent_c1_farah_r1_old", age_s=500)

CASES = [
    ("healthy active room: nothing to do", seen(box()), ACTIVE, {}, []),
    ("outside scope: untouched even when exited, duplicated or unknown",
     seen(box(scope="other", status=ContainerStatus.exited, exit_code=1), box(scope="other", name="x"),
          box(ContainerKey(client_id="ghost", agent_slug="farah", room="r1"), scope="other"), unknown=frozenset({"ghost"})),
     ACTIVE, {}, []),
    ("unmanaged-label container of our scope: untouched",
     seen(box(drop=Label.MANAGED)), ACTIVE, {}, []),
    ("labels incomplete → removed", seen(box(drop=Label.ROOM)), ACTIVE, {}, [("RemoveContainer", container_name(KEY))]),
    ("unknown tenant → removed",
     seen(box(ContainerKey(client_id="ghost", agent_slug="farah", room="r1")), unknown=frozenset({"ghost"})), {}, {},
     [("RemoveContainer", container_name(ContainerKey(client_id="ghost", agent_slug="farah", room="r1")))]),
    ("unknown agent → removed", seen(box(ContainerKey(client_id="c1", agent_slug="deleted", room="r1"))), ACTIVE, {},
     [("RemoveContainer", container_name(ContainerKey(client_id="c1", agent_slug="deleted", room="r1")))]),
    ("tenant store down → tenant rule skipped", seen(box(), agents={}), ACTIVE, {}, []),
    ("duplicates for one key → keep the canonical running one, stop the rest",
     seen(box(), DUP), ACTIVE, {}, [("RemoveContainer", "agent_c1_farah_r1_old")]),
    ("a dead agent set aside (killed between its rename and removal) beside its replacement → the set-aside one removed",
     seen(box(), box(name=retired_name("id-dead"), status=ContainerStatus.exited, exit_code=137, age_s=5)), ACTIVE, {},
     [("RemoveContainer", retired_name("id-dead"))]),
    ("duplicates: a running one beats the canonical exited one",
     seen(box(status=ContainerStatus.exited, exit_code=1), DUP), ACTIVE, {}, [("RemoveContainer", container_name(KEY))]),
    ("grace expired → containers removed and LiveKit room deleted",
     seen(box(), view=GRACE_VIEW), room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=61), {},
     [("RemoveContainer", container_name(KEY)), ("DeleteRoom", "r1")]),
    ("grace running → kept, start persisted in room metadata",
     seen(box(), view=RoomSnapshot(exists=True, agents=AGENT, metadata="{}")),
     room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=59), {}, [("SetRoomMetadata", "r1")]),
    ("grace already persisted → nothing",
     seen(box(), view=RoomSnapshot(exists=True, agents=AGENT, metadata=room_metadata.with_grace("{}", NOW - timedelta(seconds=59)) or "")),
     room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=59), {}, []),
    ("human back → persisted grace cleared",
     seen(box(), view=RoomSnapshot(exists=True, humans=HUMANS, agents=AGENT, metadata=GRACE_VIEW.metadata)), ACTIVE, {},
     [("SetRoomMetadata", "r1")]),
    ("room finished/gone in LiveKit → removed, nothing to delete",
     seen(box(), view=RoomSnapshot(exists=False)), room(RoomState.CLOSING, since_s=1), {}, [("RemoveContainer", container_name(KEY))]),
    ("operator close → removed and room deleted",
     seen(box()), {RK: Room(client_id="c1", name="r1", state=RoomState.CLOSING, since=NOW, reason="ops")}, {},
     [("RemoveContainer", container_name(KEY)), ("DeleteRoom", "r1")]),
    ("LiveKit not observable → no room rule, no crash decision",
     seen(box(status=ContainerStatus.exited, exit_code=137), view=None), ACTIVE, {}, []),
    ("past max lifetime in a call → kept: never cut a call short", seen(box(age_s=3601)), ACTIVE, {}, []),
    ("past max lifetime, nobody there → removed",
     seen(box(age_s=3601), view=RoomSnapshot(exists=True, agents=AGENT)), room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=1), {},
     [("RemoveContainer", container_name(KEY)), ("SetRoomMetadata", "r1")]),
    ("past max lifetime, LiveKit not observable → wait", seen(box(age_s=3601), view=None), ACTIVE, {}, []),
    ("past max lifetime and crashed with humans → relaunched",
     seen(box(age_s=3601, status=ContainerStatus.exited, exit_code=137), view=RoomSnapshot(exists=True, humans=HUMANS)),
     room(RoomState.STARTING, humans=HUMANS, since_s=1), {}, [("RestartAgent", container_name(KEY))]),
    ("exited cleanly → removed", seen(box(status=ContainerStatus.exited, exit_code=0)), ACTIVE, {},
     [("RemoveContainer", container_name(KEY))]),
    ("exited cleanly while its room waits for it (a trigger was just answered) → restart",
     seen(box(status=ContainerStatus.exited, exit_code=0), view=RoomSnapshot(exists=True)), room(RoomState.STARTING, since_s=1),
     {}, [("RestartAgent", container_name(KEY))]),
    ("exited while its room waits, room not observable → wait",
     seen(box(status=ContainerStatus.exited, exit_code=0), view=None), room(RoomState.STARTING, since_s=1), {}, []),
    ("crashed with nobody there → removed",
     seen(box(status=ContainerStatus.exited, exit_code=1), view=RoomSnapshot(exists=True)), room(RoomState.GRACE_PERIOD, since_s=1),
     {}, [("RemoveContainer", container_name(KEY)), ("SetRoomMetadata", "r1")]),
    ("crashed young with nobody there yet (a reconciler that did not see the trigger) → restart, as an engine would",
     seen(box(status=ContainerStatus.exited, exit_code=3, age_s=5), view=RoomSnapshot(exists=True)), room(RoomState.GRACE_PERIOD, since_s=1),
     {}, [("RestartAgent", container_name(KEY)), ("SetRoomMetadata", "r1")]),
    ("exited cleanly young with nobody there → removed",
     seen(box(status=ContainerStatus.exited, exit_code=0, age_s=5), view=RoomSnapshot(exists=True)), room(RoomState.GRACE_PERIOD, since_s=1),
     {}, [("RemoveContainer", container_name(KEY)), ("SetRoomMetadata", "r1")]),
    ("crashed with humans → restart, attempt 1, no wait",
     seen(box(status=ContainerStatus.exited, exit_code=137), view=RoomSnapshot(exists=True, humans=HUMANS)),
     room(RoomState.STARTING, humans=HUMANS, since_s=1), {}, [("RestartAgent", container_name(KEY))]),
    ("crashed again inside the backoff → wait",
     seen(box(status=ContainerStatus.exited, exit_code=1), view=RoomSnapshot(exists=True, humans=HUMANS)),
     room(RoomState.STARTING, humans=HUMANS, since_s=1), {KEY: RestartRecord(attempts=2, last_at=NOW - timedelta(seconds=3))}, []),
    ("crashed again after the backoff → restart attempt 3",
     seen(box(status=ContainerStatus.exited, exit_code=1), view=RoomSnapshot(exists=True, humans=HUMANS)),
     room(RoomState.STARTING, humans=HUMANS, since_s=1), {KEY: RestartRecord(attempts=2, last_at=NOW - timedelta(seconds=4))},
     [("RestartAgent", container_name(KEY))]),
    ("cap reached → give up and report",
     seen(box(status=ContainerStatus.exited, exit_code=1), view=RoomSnapshot(exists=True, humans=HUMANS)),
     room(RoomState.STARTING, humans=HUMANS, since_s=1), {KEY: RestartRecord(attempts=3, last_at=NOW - timedelta(hours=1))},
     [("GiveUp", container_name(KEY))]),
    ("unhealthy with humans → restart", seen(box(health=Health.unhealthy)), ACTIVE, {}, [("RestartAgent", container_name(KEY))]),
    ("unhealthy with nobody → removed",
     seen(box(health=Health.unhealthy), view=RoomSnapshot(exists=True, agents=AGENT)),
     room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=1), {}, [("RemoveContainer", container_name(KEY)), ("SetRoomMetadata", "r1")]),
    ("agent never joined, human waiting → restart",
     seen(box(age_s=31), view=RoomSnapshot(exists=True, humans=HUMANS)), room(RoomState.STARTING, humans=HUMANS, since_s=31), {},
     [("RestartAgent", container_name(KEY))]),
    ("agent never joined, nobody waiting → removed",
     seen(box(age_s=31), view=RoomSnapshot(exists=True)), room(RoomState.STARTING, since_s=31), {}, [("RemoveContainer", container_name(KEY))]),
    ("agent still within startup timeout → wait",
     seen(box(age_s=29), view=RoomSnapshot(exists=True, humans=HUMANS)), room(RoomState.STARTING, humans=HUMANS, since_s=29), {}, []),
    ("created but never started → removed", seen(box(status=ContainerStatus.created, age_s=31)), ACTIVE, {},
     [("RemoveContainer", container_name(KEY))]),
    ("being removed → left alone", seen(box(status=ContainerStatus.removing)), ACTIVE, {}, []),
]


@pytest.mark.parametrize(("name", "observed", "rooms", "restarts", "expected"), CASES, ids=[c[0] for c in CASES])
def test_plan(name: str, observed: Observation, rooms: dict, restarts: dict, expected: list[tuple[str, str]]) -> None:
    actions = plan(observed, rooms, S, NOW, restarts=restarts)
    got = [(a.kind, getattr(a, "name", "") or getattr(a, "room", "")) for a in actions]
    assert sorted(got) == sorted(expected)


def test_outside_scope_never_named() -> None:
    """Whatever the state, no action ever names another scope's container."""
    foreign = [box(scope="other", name=f"f{i}", status=s, exit_code=1) for i, s in enumerate(ContainerStatus)]
    for rooms in (ACTIVE, room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=3600), room(RoomState.CLOSING, since_s=1)):
        actions = plan(seen(*foreign, box()), rooms, S, NOW)
        assert not any(getattr(a, "name", "").startswith("f") for a in actions)


def test_restart_carries_mode_and_attempt() -> None:
    c = box(status=ContainerStatus.exited, exit_code=137)
    (a,) = plan(seen(c, view=RoomSnapshot(exists=True, humans=HUMANS)), room(RoomState.STARTING, humans=HUMANS, since_s=1), S, NOW,
                restarts={KEY: RestartRecord(attempts=1, last_at=NOW - timedelta(seconds=10))})
    assert isinstance(a, RestartAgent) and a.key == KEY and a.mode == "voice" and a.attempt == 2
    assert a.to_dict()["kind"] == "RestartAgent"


def test_grace_delete_is_once_per_room_with_two_agents() -> None:
    other = ContainerKey(client_id="c1", agent_slug="clarence", room="r1")
    actions = plan(seen(box(), box(other), view=GRACE_VIEW), room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=61), S, NOW)
    assert sum(isinstance(a, DeleteRoom) for a in actions) == 1
    assert sorted(a.name for a in actions if isinstance(a, RemoveContainer)) == sorted([container_name(KEY), container_name(other)])


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_s(n, settings=S) for n in range(8)] == [0, 2, 4, 8, 16, 32, 60, 60]


def test_next_deadline_is_the_earliest_clock() -> None:
    rooms = {**room(RoomState.GRACE_PERIOD, since_s=50), **room(RoomState.STARTING, since_s=25, key=("c1", "r2"))}
    assert next_deadline(rooms, {}, S) == NOW + timedelta(seconds=5)
    assert next_deadline({}, {KEY: RestartRecord(attempts=1, last_at=NOW)}, S) == NOW + timedelta(seconds=2)
    assert next_deadline({}, {KEY: RestartRecord(attempts=3, last_at=NOW)}, S) is None  # given up: no wake-up


def test_restart_cap_gives_up_on_the_observed_container_id() -> None:
    crashed = box(status=ContainerStatus.exited, exit_code=1)
    actions = plan(seen(crashed), ACTIVE, S, NOW, restarts={KEY: RestartRecord(attempts=3, last_at=NOW - timedelta(hours=1))})
    assert len(actions) == 1 and isinstance(actions[0], GiveUp)
    assert (actions[0].container_id, actions[0].key, actions[0].attempts) == (crashed.id, KEY, 3)


def test_grace_book_keeping_writes_our_metadata() -> None:
    actions = plan(seen(box(), view=RoomSnapshot(exists=True, agents=AGENT, metadata="{}")),
                   room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=59), S, NOW)
    assert len(actions) == 1 and isinstance(actions[0], SetRoomMetadata)
    assert room_metadata.grace_started(actions[0].metadata) == NOW - timedelta(seconds=59)


GHOST = ContainerKey(client_id="ghost", agent_slug="farah", room="r1")


@pytest.mark.parametrize(("observed", "rooms", "category"), [
    (seen(box(drop=Label.ROOM)), ACTIVE, Removal.orphan),
    (seen(box(GHOST), unknown=frozenset({"ghost"})), {}, Removal.orphan),
    (seen(box(ContainerKey(client_id="c1", agent_slug="deleted", room="r1"))), ACTIVE, Removal.orphan),
    (seen(box(), DUP), ACTIVE, Removal.duplicate),
    (seen(box(), view=RoomSnapshot(exists=False)), room(RoomState.CLOSING, since_s=1), Removal.room_gone),
    (seen(box(age_s=3601), view=RoomSnapshot(exists=True, agents=AGENT)), room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=1),
     Removal.lifetime),
    (seen(box(status=ContainerStatus.exited, exit_code=0)), ACTIVE, Removal.exited),
    (seen(box(status=ContainerStatus.paused), view=RoomSnapshot(exists=True)), room(RoomState.GRACE_PERIOD, since_s=1),
     Removal.exited),
    (seen(box(health=Health.unhealthy), view=RoomSnapshot(exists=True, agents=AGENT)),
     room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=1), Removal.unhealthy),
    (seen(box(status=ContainerStatus.created, age_s=100)), ACTIVE, Removal.never_started),
    (seen(box(), view=GRACE_VIEW), room(RoomState.GRACE_PERIOD, agents=AGENT, since_s=61), Removal.closed),
])
def test_each_removal_names_its_category(observed: Observation, rooms: dict, category: Removal) -> None:
    removals = [a for a in plan(observed, rooms, S, NOW) if isinstance(a, RemoveContainer)]
    assert [a.category for a in removals] == [category]


def test_a_paused_agent_is_restarted_while_humans_wait() -> None:
    """paused reads as gone everywhere (models.ContainerStatus): a frozen agent serves nobody."""
    actions = plan(seen(box(status=ContainerStatus.paused)), ACTIVE, S, NOW)
    assert [(a.kind, a.reason) for a in actions] == [("RestartAgent", "paused with humans in the room")]


@pytest.mark.parametrize(
    ("containers", "removed"),
    [
        ([box()], ["agent_c1_farah_r1"]),
        ([box(), box(ContainerKey(client_id="c1", agent_slug="vera", room="r1"))], ["agent_c1_farah_r1", "agent_c1_vera_r1"]),
        ([box(status=ContainerStatus.exited)], ["agent_c1_farah_r1"]),  # an exited agent of the room goes too
        ([box(ContainerKey(client_id="c1", agent_slug="farah", room="r2"))], []),  # another room
        ([box(ContainerKey(client_id="c2", agent_slug="farah", room="r1"))], []),  # another client's room of that name
        ([box(scope="other")], []),  # another deployment's agent
        ([box(status=ContainerStatus.removing)], []),  # already on its way out
        ([box(drop=Label.ROOM)], []),  # no key: the reconciler's orphan rule, not a close
    ],
)
def test_room_close_plans_that_room_only(containers: list[ContainerInfo], removed: list[str]) -> None:
    actions = room_close(containers, RK, S, why="closed by an operator")
    assert [a.name for a in actions if isinstance(a, RemoveContainer)] == removed
    assert all(a.category is Removal.closed and a.reason == "closed by an operator" for a in actions if isinstance(a, RemoveContainer))
    assert isinstance(actions[-1], DeleteRoom) and (actions[-1].client_id, actions[-1].room) == RK  # the room last
