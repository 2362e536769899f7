"""The stages of a start as they happen, for whoever waits on that room (the client rooms API's event stream).

Subscribers are per (client, room) and bounded: a slow reader loses the oldest events, never blocks a start.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.observability.starts import StageMark, StartRecord

_QUEUE = 64


def stage_event(record: StartRecord, mark: StageMark) -> dict[str, Any]:
    return {"start": record.id, "kind": record.kind, "agent": record.agent_slug, "stage": mark.stage,
            "state": mark.outcome, "offset_s": mark.offset_s, "duration_s": mark.duration_s}


def start_event(record: StartRecord) -> dict[str, Any]:
    return {"start": record.id, "kind": record.kind, "agent": record.agent_slug, "outcome": record.outcome,
            "launch": record.launch, "container": record.container, "trace_id": record.trace_id}


class ProgressHub:
    def __init__(self) -> None:
        self._subs: dict[tuple[str, str], set[asyncio.Queue[tuple[str, dict[str, Any]]]]] = {}

    @contextmanager
    def subscribe(self, client_id: str, room: str) -> Iterator[asyncio.Queue[tuple[str, dict[str, Any]]]]:
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(maxsize=_QUEUE)
        subs = self._subs.setdefault((client_id, room), set())
        subs.add(queue)
        try:
            yield queue
        finally:
            subs.discard(queue)
            if not subs:
                self._subs.pop((client_id, room), None)

    def publish(self, record: StartRecord, mark: StageMark) -> None:
        self._send(record, "stage", stage_event(record, mark))

    def finished(self, record: StartRecord) -> None:
        self._send(record, "start", start_event(record))

    def _send(self, record: StartRecord, kind: str, data: dict[str, Any]) -> None:
        if record.room is None:
            return
        for queue in self._subs.get((record.client_id, record.room), ()):
            if queue.full():
                queue.get_nowait()  # drop the oldest: a stalled reader must not hold a start back
            queue.put_nowait((kind, data))
