"""POST /api/v1/trigger-agent: the user's existing endpoint, now reuse-or-launch."""

from __future__ import annotations

from fastapi import APIRouter

from ..deps import PrincipalDep, TriggerDep
from ..schemas import AgentOut, ErrorBody, TriggerAgentRequest, TriggerAgentResponse

router = APIRouter(prefix="/api/v1", tags=["agents"])

_ERRORS = {code: {"model": ErrorBody} for code in (401, 403, 404, 409, 422, 429, 502, 503)}


@router.post("/trigger-agent", response_model=TriggerAgentResponse, responses=_ERRORS)
async def trigger_agent(body: TriggerAgentRequest, service: TriggerDep, principal: PrincipalDep) -> TriggerAgentResponse:
    """Reuse the agent's container for this room, or launch exactly one."""
    principal.require_client(body.client_id)
    r = await service.trigger(
        client_id=body.client_id, agent_slug=body.agent_slug, mode=body.mode,
        user_id=body.user_id, room_name=body.room_name,
    )
    return TriggerAgentResponse(
        status=r.outcome.value, client_id=r.client.id,
        agent=AgentOut(id=r.agent.id, slug=r.agent.slug, name=r.agent.name),
        room_name=r.room, mode=r.mode, container_name=r.container.name, container_id=r.container.id,
        container_status=r.container.status.value, spec_stale=r.spec_stale,
        livekit_url=r.client.livekit.url, user_token=r.user_token,
    )
