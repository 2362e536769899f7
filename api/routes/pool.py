"""/api/v1/admin/pool: the warm pools (members idle, being made, target) and claims by outcome (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.auth import require_admin
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 429)})


class PoolState(BaseModel):
    """Per pool (isolation domain): image, network, runtime class, memory limit and memory its idle members use
    (`memory_used_bytes`, from the usage sampler's last pass), idle, creating, target."""

    enabled: bool
    pools: list[dict[str, Any]] = []
    members: list[dict[str, Any]] = []  # idle members: name, domain (pool), engine, node, state, age_s, memory_bytes
    claims: dict[str, int] = {}  # warm | cold | handover-failed
    problem: str = ""  # a pool setting that cannot be met (e.g. the image is missing)


@router.get("/pool", response_model=PoolState)
async def pool_state(request: Request) -> PoolState:
    engine = request.app.state.engine
    if engine.pool is None:
        return PoolState(enabled=False, problem="no warm pool: ORCH_POOL_MAX=0 or an engine without one")
    return PoolState(**engine.pool_state())
