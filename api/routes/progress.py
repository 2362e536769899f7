"""A start's stages for the people waiting (server-sent events on the client rooms API) and the last starts'
timelines for the operator (`orchestrator trace <room>`); a client key sees only its own client's starts."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel
from sse_starlette import EventSourceResponse, ServerSentEvent

from orchestrator.core.waiting import get_within
from orchestrator.observability.progress import stage_event, start_event
from orchestrator.observability.starts import Stage, StartRecord, Starts

from api.deps import PrincipalDep
from api.routes.rooms import ClientQuery, RoomPath, _client, _room
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1", tags=["rooms"],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 422, 429)})  # 429: too many wrong keys
PING_S = 15.0  # below the usual 30-60 s idle timeouts of proxies in front of the API


class StageOut(BaseModel):
    stage: str
    offset_s: float
    duration_s: float | None
    outcome: str


class StartOut(BaseModel):
    id: int
    kind: str
    client_id: str
    room: str | None
    agent_slug: str | None
    started_at: str
    engine: str
    launch: str
    outcome: str
    container: str | None
    node: str | None
    trace_id: str | None
    stages: list[StageOut]


class StartsOut(BaseModel):
    starts: list[StartOut]


def _starts(request: Request) -> Starts:
    return request.app.state.starts


@router.get("/starts", response_model=StartsOut)
async def list_starts(
    request: Request, principal: PrincipalDep, client_id: ClientQuery = None,
    room: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 20,
) -> dict[str, Any]:
    """The last starts (triggers, restarts, dispatched jobs), newest first, each with its stages' timeline.

    An admin key sees every client's unless `client_id` narrows it; a client key sees its own."""
    cid = _client(principal, client_id) if (client_id or not principal.is_admin) else None
    records = _starts(request).timelines(client_id=cid, room=_room(room) if room else None, limit=limit)
    return {"starts": [r.to_dict() for r in records]}


def _done(kind: str, data: dict[str, Any]) -> bool:
    """The wait is over: the agent joined (or its join failed), or a start ended without launching anything."""
    if kind == "stage":
        return data["stage"] == Stage.agent_joined.value and data["state"] != "running"
    return data["outcome"] not in ("created", "running")


def _in_progress(record: StartRecord) -> bool:
    return record.outcome == "running" or any(m.duration_s is None for m in record.stages)


def _replay(record: StartRecord) -> list[tuple[str, dict[str, Any]]]:
    """In the order they happened: the start ends (its answer) before its agent joins."""
    stages = [("stage", stage_event(record, m)) for m in record.stages if m.stage != Stage.agent_joined.value]
    ended = [("start", start_event(record))] if record.outcome != "running" else []
    joins = [("stage", stage_event(record, m)) for m in record.stages if m.stage == Stage.agent_joined.value]
    return stages + ended + joins


@router.get("/rooms/{room}/progress", response_class=EventSourceResponse,
            responses={200: {"content": {"text/event-stream": {}}, "description": "`stage` and `start` events"}})
async def start_progress(
    request: Request, room: RoomPath, principal: PrincipalDep, client_id: ClientQuery = None,
    timeout_s: Annotated[float, Query(ge=1, le=300, description="longest wait for the agent to join")] = 60.0,
    recent_s: Annotated[float, Query(ge=0, le=3600, description="replay a finished start that began this recently")] = 10.0,
) -> EventSourceResponse:
    """The stages of the room's start as they happen (open it before or after the trigger): a `stage` event as each
    stage begins and ends (`state`: running, ok or the error code), a `start` event with the outcome; the stream
    ends when the agent joined, when the start failed or reused a running agent, or after `timeout_s`."""
    cid, name = _client(principal, client_id), _room(room)
    starts = _starts(request)

    async def events() -> AsyncIterator[ServerSentEvent]:
        deadline = time.monotonic() + timeout_s
        with starts.progress.subscribe(cid, name) as queue:
            now = request.app.state.engine.clock()
            latest = [r for r in starts.timelines(client_id=cid, room=name, limit=1)
                      if _in_progress(r) or (now - r.started_at).total_seconds() <= recent_s]
            for kind, data in _replay(latest[0]) if latest else ():
                yield ServerSentEvent(data=json.dumps(data), event=kind)
                if _done(kind, data):
                    return
            while (left := deadline - time.monotonic()) > 0:
                if (got := await get_within(queue, timeout_s=left)) is None:
                    break
                kind, data = got
                yield ServerSentEvent(data=json.dumps(data), event=kind)
                if _done(kind, data):
                    return
            yield ServerSentEvent(data=json.dumps({"timeout_s": timeout_s}), event="timeout")

    headers = {"Cache-Control": "no-cache, no-transform", "X-Accel-Buffering": "no"}
    return EventSourceResponse(events(), ping=PING_S, headers=headers)
