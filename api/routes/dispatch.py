"""/api/v1/admin/dispatch: LiveKit worker registrations and the jobs they hold (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from ..auth import require_admin
from ..deps import SettingsDep

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)])


@router.get("/dispatch")
async def dispatch_state(request: Request, settings: SettingsDep) -> dict[str, Any]:
    """Each (client, agent name) registration with LiveKit — state, worker id, last error — and open jobs."""
    service = request.app.state.dispatch
    if service is None:
        return {"enabled": False, "registrations": [], "jobs": [], "note": "set ORCH_DISPATCH_ENABLED=true to register with LiveKit"}
    return {
        "enabled": True, "automatic": settings.dispatch_automatic, "room_patterns": settings.dispatch_room_patterns,
        "registrations": service.registration_rows(), "jobs": service.job_rows(), "sync_error": service.last_sync_error or None,
    }
