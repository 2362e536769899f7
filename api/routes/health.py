"""GET /healthz: 200 only while the Docker engine answers."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from orchestrator.errors import OrchestratorError

from ..deps import RuntimeDep
from ..schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(runtime: RuntimeDep) -> JSONResponse:
    try:
        await runtime.ping()
    except OrchestratorError as exc:
        return JSONResponse(status_code=503, content=Health(status="unavailable", docker=exc.message).model_dump())
    return JSONResponse(content=Health(status="ok", docker="ok").model_dump())
