"""POST /api/v1/livekit/webhook: verified LiveKit events feed the room state machine."""

from __future__ import annotations

import re

from fastapi import APIRouter, Request

from orchestrator.core.clock import utcnow
from orchestrator.core.errors import DependencyUnavailable, OrchestratorError, TemporaryError, Unauthorized
from orchestrator.livekit.client import verify_webhook, webhook_issuer

from api.deps import TenantsDep, WebhookIntakeDep
from api.responses import WebhookAck
from api.schemas import ErrorBody

router = APIRouter(prefix="/api/v1/livekit", tags=["livekit"])

# What a LiveKit API key looks like (LiveKit's own are `API` + base62); anything else is refused
# before any tenant lookup, so a forged `iss` costs nothing.
_ISSUER = re.compile(r"[A-Za-z0-9._~-]{1,128}")
# One answer for every failure: which failure it was would tell a caller which keys tenants use.
_REFUSED = "webhook refused: it must carry a LiveKit token signed by a key and secret this orchestrator serves"


@router.post("/webhook", response_model=WebhookAck, responses={401: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def livekit_webhook(request: Request, tenants: TenantsDep, intake: WebhookIntakeDep) -> WebhookAck:
    """Verified with the API secret of the tenant whose key signed it (`iss`); anything else is a 401."""
    auth = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
    try:
        issuer = webhook_issuer(auth) if auth else ""
    except Unauthorized:
        issuer = ""
    if not _ISSUER.fullmatch(issuer):
        raise Unauthorized(_REFUSED)
    body = (await request.body()).decode("utf-8", errors="replace")
    try:
        clients = await tenants.clients_for_livekit_key(issuer)
    except TemporaryError as exc:
        # The caller is not authenticated yet: no tenant, key id or store detail in the answer.
        raise DependencyUnavailable("webhook cannot be verified right now; retry later", retry_after=exc.retry_after) from None
    except OrchestratorError:
        raise Unauthorized(_REFUSED) from None
    if not clients:
        raise Unauthorized(_REFUSED)
    try:
        notice, creds = verify_webhook(body, auth, candidates=[c.livekit for c in clients])
    except Unauthorized:
        raise Unauthorized(_REFUSED) from None
    # Several tenants may share one LiveKit project: the room metadata we wrote names the owner (the
    # trigger refuses rooms named by another client). A room naming none is not ours on a shared project.
    owners = [c.id for c in clients if c.livekit.api_secret == creds.api_secret]
    named = notice.room_client_id
    owners = [named] if named in owners else (owners if named is None and len(owners) == 1 else [])
    fresh = intake.accept(notice, client_ids=owners, now=utcnow())
    return WebhookAck(ok=True, duplicate=not fresh, event=notice.event)
