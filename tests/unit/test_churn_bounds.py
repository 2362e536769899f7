"""What the orchestrator keeps per room or per container stays bounded under churn (bench/soak.py measures the RSS)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from orchestrator.core.bounded import Newest
from orchestrator.core.models import ContainerInfo, ContainerStatus, WatchEvent, WebhookNotice
from orchestrator.observability.starts import JOINS_MAX, Starts, settled
from orchestrator.rules.naming import KEY_CACHE, _key, container_name, label_time
from orchestrator.rules.rooms import RoomRegistry
from orchestrator.rules.view import TOMBSTONE_S, AgentView
from orchestrator.runtime.docker.runtime import LAST_EXITS_KEPT, DockerRuntime
from orchestrator.services.webhooks import REMEMBER_S, WebhookIntake


async def _launch(starts: Starts, room: str) -> None:
    """One trigger that created an agent which never joins (a tiny image, or a room closed first)."""
    async with starts.begin("trigger", client_id="c1", room=room, agent_slug="farah"):
        settled(outcome="created", container=f"agent-{room}", node=None, agent_slug="farah")


@pytest.mark.parametrize(("launched", "awaiting"), [
    (1, 1),
    (JOINS_MAX, JOINS_MAX),
    (JOINS_MAX + 1, JOINS_MAX),
    (3 * JOINS_MAX, JOINS_MAX),  # a soak: thousands of agents that never join, within the join wait
])
async def test_expected_joins_are_capped(launched: int, awaiting: int) -> None:
    starts = Starts()
    for i in range(launched):
        await _launch(starts, f"r{i}")
    assert starts.awaiting == awaiting
    oldest = starts.timelines(room="r0", limit=1)
    if launched > JOINS_MAX and oldest:  # dropped first, and said so on its timeline
        assert oldest[0].stages[-1].outcome == "never_joined"


@pytest.mark.parametrize(("rooms", "closed", "left"), [
    (["a"], "a", 0),
    (["a", "b"], "a", 1),
    (["a", "a"], "a", 0),  # a relaunch replaces the first wait
    (["a"], "zzz", 1),
])
async def test_a_closed_rooms_awaited_joins_are_dropped(rooms: list[str], closed: str, left: int) -> None:
    starts = Starts()
    for room in rooms:
        await _launch(starts, room)
    starts.abandon(client_id="c1", room=closed)
    assert starts.awaiting == left
    if closed in rooms:
        assert starts.timelines(room=closed, limit=1)[0].stages[-1].outcome == "room_closed"
    assert starts.joined(client_id="c1", room=closed, identity="agent-farah") is False


# ---- per-container and per-event memory: bounded by count and by age (time passed in, never slept) -------------

NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _gone(cid: str, seq: int) -> WatchEvent:
    return WatchEvent(kind="delete", seq=seq, info=ContainerInfo(id=cid, name=f"agent-{cid}", status=ContainerStatus.dead, labels={}))


@pytest.mark.parametrize(("deleted", "every_s", "kept"), [
    (10, 1.0, 10),
    (1_000, 1.0, int(TOMBSTONE_S)),  # a soak at one close a second: the last TOMBSTONE_S seconds' worth
    (10_000, 0.01, 4096),  # a burst: the count cap
    (3, TOMBSTONE_S, 1),  # each one older than the window by the next delete
])
def test_view_tombstones_are_bounded_by_count_and_age(deleted: int, every_s: float, kept: int) -> None:
    view = AgentView()
    view.apply(WatchEvent(kind="relist", items=(), seq=0), now=NOW)
    for i in range(deleted):
        view.apply(_gone(f"c{i}", seq=i + 1), now=NOW + timedelta(seconds=i * every_s))
    assert view.tombstones == kept
    assert view.saw_deleted(f"c{deleted - 1}")  # the newest delete is always remembered (late upserts, limits)


def _notice(i: int) -> WebhookNotice:
    return WebhookNotice(id=f"EV_{i}", event="room_started", room=f"r{i}", identity="", is_agent=False,
                         created_at=0, api_key="k")


@pytest.mark.parametrize(("events", "every_s", "remembered"), [
    (10, 1.0, 10),
    (5_000, 1.0, int(REMEMBER_S)),  # the soak: memory follows the event rate, not the history
    (20_000, 0.001, 10_000),  # a burst: the count cap
])
def test_webhook_ids_are_remembered_for_the_retry_window_only(events: int, every_s: float, remembered: int) -> None:
    intake = WebhookIntake(registry=RoomRegistry(), on_change=lambda: None)
    for i in range(events):
        assert intake.accept(_notice(i), client_ids=["c1"], now=NOW + timedelta(seconds=i * every_s))
    assert len(intake) == remembered
    last = NOW + timedelta(seconds=(events - 1) * every_s)
    assert not intake.accept(_notice(events - 1), client_ids=["c1"], now=last)  # a retried delivery: still a duplicate


@pytest.mark.parametrize(("cap", "puts", "kept"), [(3, ["a"], ["a"]), (3, ["a", "b", "c", "d"], ["b", "c", "d"]),
                                                     (2, ["a", "b", "a", "c"], ["a", "c"])])  # a put makes it the newest
def test_newest_keeps_only_its_newest_keys(cap: int, puts: list[str], kept: list[str]) -> None:
    m: Newest[str, int] = Newest(cap=cap)
    for i, k in enumerate(puts):
        m.put(k, i)
    assert [k for k in "abcd" if k in m] == kept and len(m) == len(kept)


def test_an_exit_noted_after_its_removal_is_no_leak() -> None:
    """The `die` event of a removal arrives after `remove` forgot the name: a soak's names must not pile up."""
    runtime = DockerRuntime()  # its client is built lazily: no engine is asked here
    for i in range(3 * LAST_EXITS_KEPT):
        runtime.note_exit(f"agent-{i}", 137)
    assert len(runtime._last_exit) == LAST_EXITS_KEPT


def _churn(cached: str, room: str) -> None:
    key = _key("c1", "farah", room)
    {"key": lambda: key, "name": lambda: container_name(key), "created": lambda: label_time(f"2026-01-01T00:00:00.{room[1:]:0>6}")}[cached]()


@pytest.mark.parametrize(("cached", "rooms"), [
    ("key", 10), ("key", 5_000), ("name", 5_000), ("created", 5_000),  # a 5,000-lifecycle soak: a new room each
])
def test_per_key_caches_stay_bounded_under_churn(cached: str, rooms: int) -> None:
    """Every room of a soak is a new key: the caches must not keep thousands of them (each held up to 8,192)."""
    cache = {"key": _key, "name": container_name, "created": label_time}[cached]
    cache.cache_clear()
    for i in range(rooms):
        _churn(cached, f"r{i}")
    assert cache.cache_info().currsize == min(rooms, KEY_CACHE) and KEY_CACHE <= 1024
