"""/api/v1/admin/events: the lifecycle feed as JSON, and live as server-sent events (admin key)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from sse_starlette import EventSourceResponse, ServerSentEvent

from api.auth import require_admin
from api.deps import FeedDep
from api.responses import EventsOut
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/admin/events", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 422, 429)})  # 429: too many wrong keys from one address
KEEPALIVE_S = 15.0  # below the usual 30-60 s idle timeouts of proxies in front of the API


@router.get("", response_model=EventsOut)
async def list_events(
    feed: FeedDep, after: int = Query(0, ge=0, description="only events with a larger seq"),
    limit: int = Query(100, ge=1, le=1000),
) -> dict[str, Any]:
    """The most recent lifecycle events (oldest first): triggers, reconcile actions, room and container events."""
    return {"events": [e.to_dict() for e in feed.recent(after=after, limit=limit)]}


@router.get("/stream", response_class=EventSourceResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def stream_events(
    feed: FeedDep,
    after: int = Query(0, ge=0, description="replay buffered events after this seq first"),
    last_event_id: Annotated[str | None, Header()] = None,
) -> EventSourceResponse:
    """Server-sent events: `id` is the event's seq, so a reconnect with Last-Event-ID resumes without gaps."""
    start = resume_after(last_event_id, after=after)

    async def frames() -> AsyncIterator[ServerSentEvent]:
        yield ServerSentEvent(retry=2000)  # a dropped browser reconnects after 2 s, with Last-Event-ID
        # No idle ticks from the feed: sse-starlette sends the keep-alive itself (`ping`), and it notices a
        # client that went away while nothing is being sent, which ends this generator (and the subscription).
        async for event in feed.follow(after=start):
            if event is not None:
                yield ServerSentEvent(data=json.dumps(event.to_dict(), default=str), id=str(event.seq), event=event.kind)

    # no-transform / X-Accel-Buffering: proxies must not buffer a live stream. `sep="\n"`: the dashboard's
    # reader splits frames on a blank line of "\n\n" (the library's default separator is "\r\n").
    return EventSourceResponse(
        frames(), sep="\n", ping=KEEPALIVE_S, ping_message_factory=lambda: ServerSentEvent(comment="keep-alive"),
        headers={"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"},
    )


_EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only (`²`.isdigit() is true), small enough for int()


def resume_after(last_event_id: str | None, *, after: int) -> int:
    """The seq to resume after: Last-Event-ID when it is one of our ids, else `after` (a bad header is ignored)."""
    return int(last_event_id) if last_event_id and _EVENT_ID.fullmatch(last_event_id) else after
