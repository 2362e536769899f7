"""An in-process feed of lifecycle events (triggers, launches, reconcile actions, room changes) in a bounded ring buffer.

It is for people watching (the dashboard's live list, `GET /api/v1/admin/events`), not a source of truth:
it starts empty after a restart, and a slow subscriber loses its oldest undelivered events rather than
holding memory. Publish from the event loop only (Docker's event thread hops over with call_soon_threadsafe).
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from orchestrator.core.clock import utcnow
from orchestrator.core.waiting import get_within


@dataclass(frozen=True)
class LifecycleEvent:
    seq: int
    at: datetime
    kind: str  # trigger | launch | reconcile | room | container | dispatch
    message: str
    fields: dict[str, Any] = field(default_factory=dict)  # client_id, agent, room, container, ... never a secret

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "at": self.at.isoformat(), "kind": self.kind, "message": self.message, **self.fields}


_CLOSED: Any = object()  # put in every subscriber's queue by close()


class EventFeed:
    """Ring buffer plus live subscribers; `seq` increases by one per event, so a reconnect can resume."""

    def __init__(
        self, *, size: int = 500, subscriber_queue: int = 200, clock: Callable[[], datetime] = utcnow
    ) -> None:
        self._clock = clock
        self._buffer: deque[LifecycleEvent] = deque(maxlen=size)
        self._seq = itertools.count(1)
        self._subscribers: set[asyncio.Queue[LifecycleEvent]] = set()
        self._queue_size = subscriber_queue
        self._closed = False

    def publish(self, kind: str, message: str, **fields: Any) -> LifecycleEvent:
        event = LifecycleEvent(
            seq=next(self._seq), at=self._clock(), kind=kind, message=message,
            fields={k: v for k, v in fields.items() if v is not None},
        )
        self._buffer.append(event)
        for queue in self._subscribers:
            if queue.full():
                queue.get_nowait()  # drop this subscriber's oldest: a stalled browser must not grow memory
            queue.put_nowait(event)
        return event

    def close(self) -> None:
        """End every live subscription (server shutdown): open streams must not hold a graceful stop hostage."""
        self._closed = True
        for queue in self._subscribers:
            while queue.full():
                queue.get_nowait()
            queue.put_nowait(_CLOSED)

    def recent(self, *, after: int = 0, limit: int | None = None) -> list[LifecycleEvent]:
        events = [e for e in self._buffer if e.seq > after]
        return events[-limit:] if limit else events

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    async def follow(self, *, after: int = 0, idle_s: float | None = None) -> AsyncIterator[LifecycleEvent | None]:
        """The buffered events after `after`, then live ones, until the consumer stops iterating.

        Yields None after `idle_s` without an event (SSE sends a keep-alive comment then).
        """
        queue: asyncio.Queue[LifecycleEvent] = asyncio.Queue(maxsize=self._queue_size)
        if self._closed:
            return
        self._subscribers.add(queue)  # subscribe before replaying so nothing falls between the two
        try:
            last = after
            for event in self.recent(after=after):
                last = event.seq
                yield event
            while True:
                event = await get_within(queue, timeout_s=idle_s)
                if event is None:
                    yield None
                    continue
                if event is _CLOSED:
                    return
                if event.seq > last:
                    last = event.seq
                    yield event
        finally:
            self._subscribers.discard(queue)
