"""The lifecycle feed: bounded, ordered, resumable, and a slow subscriber cannot grow memory."""

from __future__ import annotations

import asyncio

from orchestrator.observability.events import EventFeed


def test_ring_buffer_is_bounded_and_ordered() -> None:
    feed = EventFeed(size=10)
    for i in range(25):
        feed.publish("trigger", f"e{i}", room="r", secret=None)
    events = feed.recent()
    assert [e.seq for e in events] == list(range(16, 26))
    assert "secret" not in events[0].to_dict()  # None fields are dropped
    assert [e.seq for e in feed.recent(after=20)] == [21, 22, 23, 24, 25]
    assert [e.seq for e in feed.recent(limit=2)] == [24, 25]


async def test_follow_replays_then_goes_live_and_unsubscribes() -> None:
    feed = EventFeed(size=10)
    feed.publish("a", "one")
    feed.publish("a", "two")
    got: list[int] = []

    async def consume() -> None:
        async for e in feed.follow(after=1):
            assert e is not None
            got.append(e.seq)
            if len(got) == 3:
                return

    task = asyncio.create_task(consume())
    while feed.subscribers == 0:
        await asyncio.sleep(0)
    feed.publish("a", "three")
    feed.publish("a", "four")
    await asyncio.wait_for(task, 2)
    assert got == [2, 3, 4]  # after=1: resumes exactly where the client was
    assert feed.subscribers == 0


async def test_idle_yields_keepalive_and_slow_subscriber_drops_oldest() -> None:
    feed = EventFeed(size=100, subscriber_queue=3)
    stream = feed.follow(idle_s=0.01)
    assert await asyncio.wait_for(anext(stream), 1) is None  # nothing happened: a keep-alive
    for i in range(10):
        feed.publish("a", f"e{i}")  # the subscriber reads nothing meanwhile
    seqs = [(await anext(stream)).seq for _ in range(3)]  # type: ignore[union-attr]
    assert seqs == [8, 9, 10]  # only the newest three were kept for it
    await stream.aclose()
    assert feed.subscribers == 0


async def test_close_ends_live_streams_and_refuses_new_ones() -> None:
    feed = EventFeed()
    stream = feed.follow(idle_s=30)
    pending = asyncio.ensure_future(anext(stream))
    while feed.subscribers == 0:
        await asyncio.sleep(0)
    feed.close()
    try:
        await asyncio.wait_for(pending, 1)
        raise AssertionError("the stream should have ended")
    except StopAsyncIteration:
        pass
    assert feed.subscribers == 0
    assert [e async for e in feed.follow()] == []
