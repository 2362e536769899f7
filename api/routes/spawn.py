"""POST /api/v1/agents/{agent_id}/spawn: the dashboard's "Test Agent" flow on top of the trigger path."""

from __future__ import annotations

import secrets
import time
from typing import Annotated

from fastapi import APIRouter, Body, Path

from orchestrator.core.errors import InvalidInput, OrchestratorError

from api.deps import FeedDep, MetricsDep, PrincipalDep, TriggerDep, count_dependency
from api.schemas import AgentOut, ErrorBody, SpawnAgentRequest, SpawnAgentResponse

router = APIRouter(prefix="/api/v1", tags=["agents"])

_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 429, 502, 503)}
AgentId = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$")]


@router.post("/agents/{agent_id}/spawn", response_model=SpawnAgentResponse, responses=_ERRORS)
async def spawn_agent(
    agent_id: AgentId,
    service: TriggerDep,
    principal: PrincipalDep,
    metrics: MetricsDep,
    feed: FeedDep,
    body: Annotated[SpawnAgentRequest | None, Body()] = None,
) -> SpawnAgentResponse:
    """Look the agent up by id, open a fresh room `agent-<agent_id>-<8 hex>` and launch its container."""
    body = body or SpawnAgentRequest()
    client_id = body.client_id or principal.client_id
    if client_id is None:
        raise InvalidInput("client_id is required when the API key is not bound to one client", details={"field": "client_id"})
    principal.require_client(client_id)
    started = time.perf_counter()
    try:
        r = await service.spawn(
            client_id=client_id, agent_id=agent_id, mode=body.mode, user_id=body.user_id or f"user-{secrets.token_hex(4)}"
        )
    except OrchestratorError as exc:
        # A spawn is a trigger by agent id: same counters, so the spawn success rate covers both paths.
        metrics.triggers.labels(outcome=exc.code).inc()
        feed.publish("trigger", f"spawn {agent_id} failed: {exc.code}", outcome=exc.code, client_id=client_id, error=exc.message)
        count_dependency(metrics, exc)
        raise
    elapsed = time.perf_counter() - started
    metrics.triggers.labels(outcome=r.outcome.value).inc()
    metrics.trigger_seconds.labels(outcome=r.outcome.value).observe(elapsed)
    feed.publish(
        "trigger", f"spawn {r.agent.slug} in {r.room}: {r.outcome.value} {r.container.name}", outcome=r.outcome.value,
        client_id=r.client.id, agent=r.agent.slug, room=r.room, container=r.container.name, latency_ms=round(elapsed * 1000, 1),
    )
    return SpawnAgentResponse(
        status=r.outcome.value, room_name=r.room, token=r.user_token, livekit_url=r.client.livekit.url,
        agent=AgentOut(id=r.agent.id, slug=r.agent.slug, name=r.agent.name), client_id=r.client.id,
        container_name=r.container.name,
    )
