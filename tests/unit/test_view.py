"""Table tests for the view's update rules: relist, upsert, delete, duplicates, out-of-order, renames."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from orchestrator.core.models import ContainerInfo, ContainerKey, ContainerStatus
from orchestrator.rules.naming import container_labels, container_name
from orchestrator.core.models import Agent, Mode
from orchestrator.runtime import WatchEvent
from orchestrator.core.models import Health
from orchestrator.rules.view import AgentView, change_signal

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)
AGENT = Agent(id="a1", slug="farah", name="Farah")


def box(cid: str, room: str = "r1", *, status: ContainerStatus = ContainerStatus.running, name: str | None = None) -> ContainerInfo:
    key = ContainerKey(client_id="c1", agent_slug="farah", room=room)
    labels = container_labels(key, agent=AGENT, mode=Mode.voice, scope="s", spec="h", created_at=NOW)
    return ContainerInfo(id=cid, name=name or container_name(key), status=status, labels=labels)


def relist(*items: ContainerInfo, seq: int | None = 10) -> WatchEvent:
    return WatchEvent(kind="relist", items=items, seq=seq)


def up(info: ContainerInfo, seq: int | None) -> WatchEvent:
    return WatchEvent(kind="upsert", info=info, seq=seq)


def rm(info: ContainerInfo, seq: int | None) -> WatchEvent:
    return WatchEvent(kind="delete", info=info, seq=seq)


def names(view: AgentView) -> dict[str, str]:
    return {c.id: c.status.value for c in view.state.containers()}


CASES = [
    ("relist replaces everything", [relist(box("x")), relist(box("y", "r2"))], {"y": "running"}),
    ("upsert adds", [relist(), up(box("x"), 11)], {"x": "running"}),
    ("duplicate event is harmless", [relist(), up(box("x"), 11), up(box("x"), 11)], {"x": "running"}),
    (
        "older upsert after newer one is dropped",
        [relist(), up(box("x", status=ContainerStatus.exited), 12), up(box("x"), 11)],
        {"x": "exited"},
    ),
    ("delete removes", [relist(box("x")), rm(box("x"), 11)], {}),
    ("late upsert after delete does not resurrect", [relist(box("x")), rm(box("x"), 12), up(box("x"), 11)], {}),
    (
        "late upsert without seq after delete does not resurrect",
        [relist(box("x"), seq=None), rm(box("x"), None), up(box("x"), None)],
        {},
    ),
    ("delete of unknown id is a no-op", [relist(box("x")), rm(box("zz"), 11)], {"x": "running"}),
    ("event older than the relist is dropped", [relist(box("x"), seq=20), up(box("x", status=ContainerStatus.exited), 15)], {"x": "running"}),
    ("removed behind our back: relist without it", [relist(box("x")), relist()], {}),
]


@pytest.mark.parametrize("title, events, expected", CASES, ids=[c[0] for c in CASES])
def test_update_rules(title: str, events: list[WatchEvent], expected: dict[str, str]) -> None:
    view = AgentView()
    for e in events:
        view.apply(e, now=NOW)
    assert names(view) == expected


def test_indexes_follow_a_rename_and_duplicates_share_a_key() -> None:
    view = AgentView()
    a, b = box("x"), box("y", name="dup")  # two containers for one key (a duplicate the reconciler will remove)
    view.apply(relist(a, b), now=NOW)
    key = ContainerKey(client_id="c1", agent_slug="farah", room="r1")
    assert {c.id for c in view.state.for_key(key)} == {"x", "y"}
    view.apply(up(box("y", name="renamed"), 11), now=NOW)
    assert view.state.named("renamed").id == "y"  # type: ignore[union-attr]
    assert view.state.named(a.name).id == "x"  # type: ignore[union-attr]
    view.apply(rm(a, 12), now=NOW)
    assert view.state.named(a.name) is None
    assert [c.id for c in view.state.for_key(key)] == ["y"]


def test_readers_keep_their_snapshot_while_the_view_moves_on() -> None:
    view = AgentView()
    view.apply(relist(box("x")), now=NOW)
    snapshot = view.state
    view.apply(rm(box("x"), 11), now=NOW)
    assert [c.id for c in snapshot.containers()] == ["x"]  # never torn: the old state is untouched
    assert view.state.containers() == ()


def test_not_synced_until_first_relist_and_after_invalidate() -> None:
    view = AgentView()
    assert not view.synced and view.age_s(now=NOW) is None
    view.apply(up(box("x"), 1), now=NOW)
    assert not view.synced  # events alone never make a view trustworthy
    view.apply(relist(box("x")), now=NOW)
    assert view.synced and view.age_s(now=NOW) == 0.0
    view.apply(WatchEvent(kind="broken"), now=NOW)
    assert not view.synced  # the stream was lost: no answers from the view until the next relist
    assert [c.id for c in view.state.containers()] == ["x"]


def test_malformed_event_is_refused() -> None:
    with pytest.raises(ValueError):
        AgentView().apply(WatchEvent(kind="upsert"), now=NOW)


SIGNALS = [
    ("running → exited is a death", box("x"), up(box("x", status=ContainerStatus.exited), 2), "die"),
    ("a second event for the same death is not", box("x", status=ContainerStatus.exited), up(box("x", status=ContainerStatus.exited), 3), None),
    ("unknown → exited is a death", None, up(box("x", status=ContainerStatus.exited), 2), "die"),
    ("start is not news for the reconciler", None, up(box("x"), 2), None),
    ("turning unhealthy", box("x"), up(box("x").model_copy(update={"health": Health.unhealthy}), 2), "health_status: unhealthy"),
    ("removal of a known container", box("x"), rm(box("x"), 2), "destroy"),
    ("removal of an unknown one", None, rm(box("x"), 2), None),
    ("relist", None, relist(box("x")), None),
]


@pytest.mark.parametrize("title, before, event, expected", SIGNALS, ids=[c[0] for c in SIGNALS])
def test_change_signal(title: str, before: ContainerInfo | None, event: WatchEvent, expected: str | None) -> None:
    assert change_signal(event, before) == expected


def test_an_agent_failing_again_is_a_signal_once_per_new_reason() -> None:
    from orchestrator.core.models import ContainerInfo, ContainerStatus, WatchEvent
    from orchestrator.rules.view import change_signal

    up = ContainerInfo(id="i", name="n", status=ContainerStatus.running)
    failing = up.model_copy(update={"reason": "exit 3, restarted: could not join LiveKit"})
    assert change_signal(WatchEvent(kind="upsert", info=failing), up) == "failing"
    assert change_signal(WatchEvent(kind="upsert", info=failing), failing) is None
    assert change_signal(WatchEvent(kind="upsert", info=up.model_copy(update={"reason": "no suitable node"})), up) is None
