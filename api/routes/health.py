"""Health probes: /livez (the process and its loops), /readyz (engine and LiveKit), /healthz (the engine, as before)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from orchestrator.core.errors import OrchestratorError
from orchestrator.services.readiness import check_readiness
from orchestrator.services.reconciler import Reconciler

from api.deps import ClockDep, InformerDep, LiveKitDep, ReconcilerDep, RuntimeDep, TenantsDep
from api.schemas import Health, Liveness, Readiness, ViewHealth

router = APIRouter(tags=["health"])
READY_TIMEOUT_S = 2.0  # each check; under the readiness probe's timeoutSeconds in deploy/kubernetes


def loop_state(reconciler: Reconciler) -> str:
    return (
        "stalled" if reconciler.stalled()
        else "ok" if reconciler.heartbeat
        else "starting" if reconciler.started_at
        else "not running"
    )


@router.get("/livez", response_model=Liveness, responses={503: {"model": Liveness}})
async def livez(reconciler: ReconcilerDep) -> JSONResponse:
    """200 while the process answers and the reconcile loop keeps its heartbeat. A dependency being down is
    no reason to restart us (a restart cannot bring LiveKit back), so nothing outside the process is asked."""
    loop = loop_state(reconciler)
    status = 503 if loop == "stalled" else 200
    return JSONResponse(status_code=status, content=Liveness(status="stalled" if status == 503 else "ok", reconciler=loop).model_dump())


@router.get("/readyz", response_model=Readiness, responses={503: {"model": Readiness}})
async def readyz(runtime: RuntimeDep, reconciler: ReconcilerDep, tenants: TenantsDep, livekit: LiveKitDep) -> JSONResponse:
    """200 when a trigger could succeed now: the engine answers, some LiveKit server answers, the loop runs."""
    loop = loop_state(reconciler)
    ready = await check_readiness(runtime=runtime, tenants=tenants, livekit=livekit, timeout_s=READY_TIMEOUT_S)
    ok = ready.ready and loop != "stalled"
    body = Readiness(status="ok" if ok else "unavailable", engine=ready.engine, livekit=ready.livekit_summary(), reconciler=loop)
    return JSONResponse(status_code=200 if ok else 503, content=body.model_dump())


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(runtime: RuntimeDep, reconciler: ReconcilerDep, informer: InformerDep, clock: ClockDep) -> JSONResponse:
    """Kept for compatibility (Docker/Compose healthchecks): 200 only while the engine answers and the loop runs."""
    loop = loop_state(reconciler)
    view = ViewHealth.model_validate(informer.health(now=clock()))
    try:
        await runtime.ping()
    except OrchestratorError as exc:
        return JSONResponse(status_code=503, content=Health(status="unavailable", docker=exc.message, reconciler=loop, view=view).model_dump())
    if loop == "stalled":
        # A stuck loop means no grace period ends and no crash is repaired: tell the supervisor.
        return JSONResponse(status_code=503, content=Health(status="unavailable", docker="ok", reconciler=loop, view=view).model_dump())
    return JSONResponse(content=Health(status="ok", docker="ok", reconciler=loop, view=view).model_dump())
