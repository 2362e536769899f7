"""/api/v1/admin/dispatch: LiveKit worker registrations and the jobs they hold (admin key)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel

from api.auth import require_admin
from api.deps import SettingsDep
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], dependencies=[Depends(require_admin)],
                   responses={code: {"model": ErrorBody} for code in (401, 403, 429)})  # 429: too many wrong keys from one address


class DispatchState(BaseModel):
    """Worker registrations with LiveKit and the jobs they hold."""

    enabled: bool
    automatic: bool = False
    room_patterns: list[str] = []
    registrations: list[dict[str, Any]] = []
    jobs: list[dict[str, Any]] = []
    sync_error: str | None = None
    note: str | None = None


@router.get("/dispatch", response_model=DispatchState)
async def dispatch_state(request: Request, settings: SettingsDep) -> DispatchState:
    """Each (client, agent name) registration with LiveKit — state, worker id, last error — and open jobs."""
    service = request.app.state.dispatch
    if service is None:
        return DispatchState(enabled=False, note="set ORCH_DISPATCH_ENABLED=true to register with LiveKit")
    return DispatchState(
        enabled=True, automatic=settings.dispatch_automatic, room_patterns=list(settings.dispatch_room_patterns),
        registrations=service.registration_rows(), jobs=service.job_rows(), sync_error=service.last_sync_error or None,
    )
