"""POST /api/v1/livekit/webhook: verified LiveKit events feed the room state machine."""

from __future__ import annotations

from fastapi import APIRouter, Request

from orchestrator.errors import Unauthorized
from orchestrator.livekit import verify_webhook, webhook_issuer
from orchestrator.clock import utcnow

from ..deps import TenantsDep, WebhookIntakeDep
from ..responses import WebhookAck
from ..schemas import ErrorBody

router = APIRouter(prefix="/api/v1/livekit", tags=["livekit"])


@router.post("/webhook", response_model=WebhookAck, responses={401: {"model": ErrorBody}})
async def livekit_webhook(request: Request, tenants: TenantsDep, intake: WebhookIntakeDep) -> WebhookAck:
    """Verified with the API secret of the tenant whose key signed it (`iss`); anything else is a 401."""
    auth = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    if not auth:
        raise Unauthorized("missing Authorization: LiveKit sends the signed webhook token there")
    body = (await request.body()).decode("utf-8", errors="replace")
    clients = await tenants.clients_for_livekit_key(webhook_issuer(auth))
    if not clients:
        raise Unauthorized("webhook signed by an API key no tenant uses")
    notice, creds = verify_webhook(body, auth, candidates=[c.livekit for c in clients])
    # Several tenants may share one LiveKit project: the room metadata we wrote names the owner;
    # for a room without it, each tenant on that project holds its own (client, room) entry.
    owners = [c.id for c in clients if c.livekit.api_secret == creds.api_secret]
    if notice.room_client_id in owners:
        owners = [notice.room_client_id]
    fresh = intake.accept(notice, client_ids=owners, now=utcnow())
    return WebhookAck(ok=True, duplicate=not fresh, event=notice.event)

