"""GET /healthz: 200 only while the Docker engine answers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from orchestrator.core.errors import OrchestratorError

from api.deps import ClockDep, InformerDep, ReconcilerDep, RuntimeDep
from api.schemas import Health, ViewHealth

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(runtime: RuntimeDep, reconciler: ReconcilerDep, informer: InformerDep, clock: ClockDep) -> JSONResponse:
    loop = (
        "stalled" if reconciler.stalled()
        else "ok" if reconciler.heartbeat
        else "starting" if reconciler.started_at
        else "not running"
    )
    view = ViewHealth.model_validate(informer.health(now=clock()))
    try:
        await runtime.ping()
    except OrchestratorError as exc:
        return JSONResponse(status_code=503, content=Health(status="unavailable", docker=exc.message, reconciler=loop, view=view).model_dump())
    if loop == "stalled":
        # A stuck loop means no grace period ends and no crash is repaired: tell the supervisor.
        return JSONResponse(status_code=503, content=Health(status="unavailable", docker="ok", reconciler=loop, view=view).model_dump())
    return JSONResponse(content=Health(status="ok", docker="ok", reconciler=loop, view=view).model_dump())
