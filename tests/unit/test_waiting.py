"""wait_event: bounded, and a cancel that arrives as the event fires still ends the loop around it."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.core.waiting import get_within, wait_event


async def test_answers_set_or_timed_out() -> None:
    event = asyncio.Event()
    assert await wait_event(event, timeout_s=0.01) is False
    event.set()
    assert await wait_event(event, timeout_s=0.01) is True


async def test_get_within_without_a_limit_waits_for_the_item() -> None:
    """timeout_s=None (the events feed's follow without keep-alives) waits as long as it takes, as wait_for(None) did."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    assert await get_within(queue, timeout_s=0.01) is None
    asyncio.get_running_loop().call_later(0.05, queue.put_nowait, 7)
    assert await get_within(queue, timeout_s=None) == 7


async def test_a_cancel_racing_the_event_ends_a_forever_loop() -> None:
    """asyncio.wait_for on 3.11 loses this cancel now and then (CPython gh-86296); the loop would never end."""
    for _ in range(200):  # the race is lost in a few percent of rounds
        event = asyncio.Event()

        async def forever() -> None:
            while True:
                event.clear()
                await wait_event(event, timeout_s=5)

        task = asyncio.create_task(forever())
        await asyncio.sleep(0)  # the task is now waiting on the event
        event.set()
        task.cancel()  # in the same tick as the wake-up: the race
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(task), timeout=2)
