"""/api/v1/admin/events: the lifecycle feed as JSON, and live as server-sent events (admin key)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query
from fastapi.responses import StreamingResponse

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


@router.get("/stream", response_class=StreamingResponse, responses={200: {"content": {"text/event-stream": {}}}})
async def stream_events(
    feed: FeedDep,
    after: int = Query(0, ge=0, description="replay buffered events after this seq first"),
    last_event_id: Annotated[str | None, Header()] = None,
) -> StreamingResponse:
    """Server-sent events: `id` is the event's seq, so a reconnect with Last-Event-ID resumes without gaps."""
    start = resume_after(last_event_id, after=after)

    async def body() -> AsyncIterator[str]:
        yield "retry: 2000\n\n"
        async for event in feed.follow(after=start, idle_s=KEEPALIVE_S):
            if event is None:
                yield ": keep-alive\n\n"
            else:
                yield f"id: {event.seq}\nevent: {event.kind}\ndata: {json.dumps(event.to_dict(), default=str)}\n\n"

    # no-transform / X-Accel-Buffering: proxies must not buffer a live stream.
    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return StreamingResponse(body(), media_type="text/event-stream", headers=headers)



_EVENT_ID = re.compile(r"[0-9]{1,18}")  # ASCII digits only (`²`.isdigit() is true), small enough for int()


def resume_after(last_event_id: str | None, *, after: int) -> int:
    """The seq to resume after: Last-Event-ID when it is one of our ids, else `after` (a bad header is ignored)."""
    return int(last_event_id) if last_event_id and _EVENT_ID.fullmatch(last_event_id) else after
