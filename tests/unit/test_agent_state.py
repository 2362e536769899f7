"""One agent's phase as its client sees it (pure table)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.rules.agent_states import AgentPhase, GaveUpRecord, agent_status
from orchestrator.core.models import ContainerInfo, ContainerStatus, Health
from orchestrator.rules.planner import RestartRecord
from orchestrator.rules.rooms import Room, RoomState

NOW = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
ME = "agent-farah"


def box(status: ContainerStatus = ContainerStatus.running, *, exit_code: int | None = None, health: Health = Health.none) -> ContainerInfo:
    return ContainerInfo(id="c0ffee", name="agent_x_farah_r1", status=status, exit_code=exit_code, health=health)


def room(state: RoomState, agents: frozenset[str] = frozenset(), *, since: datetime | None = None, reason: str = "") -> Room:
    return Room(client_id="c1", name="r1", state=state, agents=agents, since=since, reason=reason)


@pytest.mark.parametrize(("container", "tracked", "in_room", "restart", "gave_up", "phase", "reason_has"), [
    (box(), None, None, None, None, AgentPhase.starting, "not in the room yet"),
    (box(health=Health.starting), room(RoomState.STARTING), None, None, None, AgentPhase.starting, "health starting"),
    (box(), room(RoomState.ACTIVE, frozenset({ME})), None, None, None, AgentPhase.joined, "in the room"),
    (box(), room(RoomState.STARTING), frozenset({ME}), None, None, AgentPhase.joined, "in the room"),  # LiveKit's look wins
    (box(), room(RoomState.ACTIVE, frozenset({ME})), frozenset(), None, None, AgentPhase.starting, "not in the room"),
    (box(), room(RoomState.GRACE_PERIOD, frozenset({ME}), since=NOW - timedelta(seconds=20)), None, None, None, AgentPhase.in_grace, "grace"),
    (box(), room(RoomState.CLOSING, frozenset({ME}), reason="grace expired"), None, None, None, AgentPhase.stopping, "grace expired"),
    (box(ContainerStatus.exited, exit_code=0), None, None, None, None, AgentPhase.stopped, "exited cleanly"),
    (box(ContainerStatus.exited, exit_code=1), None, None, None, None, AgentPhase.crashed, "exited with code 1; restarted while humans"),
    (box(ContainerStatus.dead), None, None, RestartRecord(attempts=2, last_at=NOW), None, AgentPhase.crashed, "code unknown; restart 2 done"),
    (None, None, None, None, GaveUpRecord(reason="crashed 5 times", at=NOW, attempts=5), AgentPhase.gave_up, "gave up after 5 restarts"),
    (None, None, None, None, None, AgentPhase.stopped, "no container"),
])
def test_agent_phase(container, tracked, in_room, restart, gave_up, phase, reason_has) -> None:  # type: ignore[no-untyped-def]
    s = agent_status("farah", container, room=tracked, in_room=in_room, restart=restart, gave_up=gave_up, now=NOW, grace_s=60)
    assert (s.phase, s.agent_slug) == (phase, "farah")
    assert reason_has in s.reason, s.reason


def test_in_grace_says_how_long_is_left() -> None:
    tracked = room(RoomState.GRACE_PERIOD, frozenset({ME}), since=NOW - timedelta(seconds=20))
    s = agent_status("farah", box(), room=tracked, now=NOW, grace_s=60)
    assert s.grace_remaining_s == pytest.approx(40) and s.container_name == "agent_x_farah_r1"


@pytest.mark.parametrize(("container", "abnormal"), [
    (box(), False),  # removed because its room closed or the grace ended: its last lines are goodbye noise
    (box(health=Health.healthy), False),
    (box(ContainerStatus.exited, exit_code=0), False),
    (box(ContainerStatus.created), False),
    (box(ContainerStatus.exited, exit_code=1), True),
    (box(ContainerStatus.exited, exit_code=137), True),
    (box(ContainerStatus.dead), True),
    (box(ContainerStatus.restarting), True),
    (box(health=Health.unhealthy), True),
    (box(health=Health.starting), True),  # never became healthy: never joined
])
def test_the_log_tail_is_kept_only_for_abnormal_ends(container: ContainerInfo, abnormal: bool) -> None:
    from orchestrator.rules.agent_states import ended_abnormally

    assert ended_abnormally(container) is abnormal
