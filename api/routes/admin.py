"""/api/v1/admin/...: rooms, stats, force-close, reconcile now, managed containers.

Every route here needs an admin key (router-level dependency).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Query

from orchestrator.core.models import ContainerStatus
from orchestrator.rules.naming import validate_room
from orchestrator.rules.agent_rows import container_row

from api.auth import require_admin
from api.deps import ClockDep, OperationsDep, ReconcilerDep, RuntimeDep, SamplerDep, SettingsDep
from api.responses import CloseOut, ContainersOut, PassOut, RoomsOut, StatsOut
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 404, 422, 429, 503)})  # 429: too many wrong keys from one address


@router.get("/rooms", response_model=RoomsOut)
async def list_rooms(reconciler: ReconcilerDep) -> dict[str, Any]:
    """Rooms that hold an agent of ours: state, humans, agents, grace remaining."""
    return {"rooms": reconciler.room_rows()}


@router.get("/stats", response_model=StatsOut)
async def admin_stats(reconciler: ReconcilerDep, runtime: RuntimeDep, settings: SettingsDep) -> dict[str, Any]:
    """Rooms by state, containers, limits and the reconciler's last pass."""
    containers = await runtime.list_managed(scope=settings.scope)
    states: dict[str, int] = {}
    for row in reconciler.room_rows():
        states[row["state"]] = states.get(row["state"], 0) + 1
    last = reconciler.last_report
    return {
        "scope": settings.scope,
        "engine": settings.runtime,
        "rooms": {"total": sum(states.values()), **states},
        "containers": {"total": len(containers), "running": sum(c.status is ContainerStatus.running for c in containers)},
        "limits": {
            "max_agents_per_room": settings.max_agents_per_room,
            "max_agents_per_client": settings.max_agents_per_client,
            "max_agents_total": settings.max_agents_total,
        },
        "reconciler": {
            "passes": reconciler.passes,
            "heartbeat": reconciler.heartbeat.isoformat() if reconciler.heartbeat else None,
            "restarts_pending": len(reconciler.restarts),
            "last_pass": last.to_dict() if last else None,
        },
    }


@router.post("/rooms/{client_id}/{room}/close", response_model=CloseOut)
async def close_room(client_id: str, room: str, operations: OperationsDep) -> dict[str, Any]:
    """Close a room now: its agent containers are stopped and the LiveKit room is deleted."""
    report = await operations.close_room(client_id, validate_room(room))
    return {"closed": {"client_id": client_id, "room": room}, "pass": report.to_dict()}


@router.post("/reconcile", response_model=PassOut)
async def reconcile_now(reconciler: ReconcilerDep, dry_run: bool = Query(False)) -> dict[str, Any]:
    """Run one reconcile pass now and return its actions (or only the plan with dry_run=true)."""
    return (await reconciler.run_once(dry_run=dry_run)).to_dict()


@router.get("/containers", response_model=ContainersOut)
async def list_containers(runtime: RuntimeDep, settings: SettingsDep, sampler: SamplerDep, clock: ClockDep) -> dict[str, Any]:
    """This deployment's agent containers, with the background sampler's latest CPU and memory."""
    rows = await runtime.list_managed(scope=settings.scope)
    now = clock()
    usage = sampler.latest  # the background sampler's last one-shot stats: no Docker call per container here
    return {
        "containers": [
            {
                **container_row(c, now=now),
                "cpu_ratio": round(u.cpu_ratio, 4) if (u := usage.get(c.name)) and u.cpu_ratio is not None else None,
                "memory_bytes": u.memory_bytes if u else None,
            }
            for c in sorted(rows, key=lambda c: c.name)
        ]
    }
