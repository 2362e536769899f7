"""Waiting on an event with a bound, in a way a cancel always ends.

Python 3.11's asyncio.wait_for swallows a cancel that arrives while the awaited event fires (CPython gh-86296,
fixed in 3.12): a `while True` loop around it then never ends, and a shutdown that awaits the loop's task hangs.
asyncio.timeout has no such race."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")


async def wait_event(event: asyncio.Event, *, timeout_s: float) -> bool:
    """True when the event was set within timeout_s, False when the time ran out."""
    try:
        async with asyncio.timeout(max(0.0, timeout_s)):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def get_within(queue: asyncio.Queue[T], *, timeout_s: float | None) -> T | None:
    """The queue's next item, or None when timeout_s ran out first (put no None on such a queue); None: no limit."""
    try:
        async with asyncio.timeout(None if timeout_s is None else max(0.0, timeout_s)):
            return await queue.get()
    except TimeoutError:
        return None
