"""POST /api/v1/trigger-agent: the user's existing endpoint, now reuse-or-launch."""

from __future__ import annotations

import time

from fastapi import APIRouter, Response

from orchestrator.core.errors import OrchestratorError
from orchestrator.core.models import TriggerOutcome

from api.deps import FeedDep, MetricsDep, PrincipalDep, TriggerDep, count_dependency
from api.schemas import AgentOut, ErrorBody, TriggerAgentRequest, TriggerAgentResponse

router = APIRouter(prefix="/api/v1", tags=["agents"])

_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 429, 502, 503)}


@router.post(
    "/trigger-agent", response_model=TriggerAgentResponse, status_code=200,
    responses={201: {"model": TriggerAgentResponse, "description": "a container was created (`status: created`)"}, **_ERRORS},
)
async def trigger_agent(
    body: TriggerAgentRequest, response: Response, service: TriggerDep, metrics: MetricsDep, principal: PrincipalDep, feed: FeedDep
) -> TriggerAgentResponse:
    """Reuse the agent's container for this room (200, `status: reused`), or launch exactly one (201, `status: created`)."""
    principal.require_client(body.client_id)
    started = time.perf_counter()
    try:
        r = await service.trigger(
            client_id=body.client_id, agent_slug=body.agent_slug, mode=body.mode,
            user_id=body.user_id, room_name=body.room_name,
        )
    except OrchestratorError as exc:
        metrics.triggers.labels(outcome=exc.code).inc()
        feed.publish(
            "trigger", f"trigger {body.agent_slug} in {body.room_name or '(new room)'} failed: {exc.code}",
            outcome=exc.code, client_id=body.client_id, agent=body.agent_slug, room=body.room_name, error=exc.message,
        )
        count_dependency(metrics, exc)
        raise
    response.status_code = 201 if r.outcome is TriggerOutcome.created else 200
    metrics.triggers.labels(outcome=r.outcome.value).inc()
    elapsed = time.perf_counter() - started
    metrics.trigger_seconds.labels(outcome=r.outcome.value).observe(elapsed)
    feed.publish(
        "trigger", f"trigger {r.agent.slug} in {r.room}: {r.outcome.value} {r.container.name}",
        outcome=r.outcome.value, client_id=r.client.id, agent=r.agent.slug, room=r.room, container=r.container.name,
        latency_ms=round(elapsed * 1000, 1),
    )
    return TriggerAgentResponse(
        status=r.outcome.value, client_id=r.client.id,
        agent=AgentOut(id=r.agent.id, slug=r.agent.slug, name=r.agent.name),
        room_name=r.room, mode=r.mode, container_name=r.container.name, container_id=r.container.id,
        container_status=r.container.status.value, spec_stale=r.spec_stale,
        livekit_url=r.client.livekit.url, user_token=r.user_token,
    )
