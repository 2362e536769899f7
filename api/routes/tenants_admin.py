"""Admin endpoints for the tenant store: cache invalidation (the CLI's `tenants invalidate` calls this)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Depends

from api.auth import require_admin
from api.deps import AdminDep, TenantsDep
from api.schemas import ErrorBody, InvalidateRequest, InvalidateResponse

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/v1/admin/tenants", tags=["admin"], dependencies=[Depends(require_admin)],
    responses={code: {"model": ErrorBody} for code in (401, 403, 422, 429)},  # 429: too many wrong keys from one address
)


@router.post("/invalidate", response_model=InvalidateResponse)
async def invalidate_tenant_cache(tenants: TenantsDep, principal: AdminDep, body: InvalidateRequest | None = None) -> InvalidateResponse:
    """Expire cached clients and agents (one client's or all) so the next lookup re-reads Supabase."""
    client_id = body.client_id if body else None
    expired = await tenants.invalidate(client_id)
    log.info("tenant cache invalidated by %s", principal.name, extra={"client_id": client_id, "expired": expired})
    return InvalidateResponse(expired=expired)
