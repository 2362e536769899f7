"""API-key authentication and per-client authorisation as FastAPI dependencies (attach per route or per router)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

import math

from api.guards import request_source
from orchestrator.core.apikeys import FailureThrottle, KeyRing
from orchestrator.core.errors import Forbidden, LimitExceeded, Unauthorized

log = logging.getLogger(__name__)

# Either header works: `Authorization: Bearer <key>` (curl, dashboards) or `X-API-Key: <key>`.
_bearer = HTTPBearer(auto_error=False, description="an orchestrator API key")
_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="an orchestrator API key")


@dataclass(frozen=True)
class Principal:
    """Who is calling: an admin (may do everything), one client (may act only for itself), or a metrics
    scraper (may read /metrics and nothing else, so Prometheus never holds the admin key)."""

    name: str
    client_id: str | None  # None: admin or metrics, or auth disabled on the local embedded default
    role: str = "admin"

    @property
    def is_admin(self) -> bool:
        return self.role == "admin" and self.client_id is None

    def require_client(self, client_id: str) -> None:
        if not self.is_admin and client_id != self.client_id:
            raise Forbidden(f"this API key may only act for client '{self.client_id}'", details={"field": "client_id"})


AUTH_DISABLED = Principal(name="auth-disabled", client_id=None)
METRICS_ONLY = "this API key may only read /metrics"


def _keyring(request: Request) -> KeyRing:
    return request.app.state.api_keys


def _throttle(request: Request) -> FailureThrottle:
    throttle = getattr(request.app.state, "auth_failures", None)
    if throttle is None:  # one per app, made on first use
        throttle = request.app.state.auth_failures = FailureThrottle()
    return throttle


async def authenticate(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    header: Annotated[str | None, Depends(_header)],
) -> Principal:
    """Whoever the key names, any role; routes use `require_api_key` (no metrics keys) or `require_metrics_reader`."""
    ring = _keyring(request)
    if not ring.enabled:
        return AUTH_DISABLED
    presented = header or (bearer.credentials if bearer else None)
    if not presented:
        raise Unauthorized("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`")
    entry = ring.verify(presented)
    if entry is not None:  # a valid key is never throttled (api/guards)
        principal = Principal(name=entry.name, client_id=entry.client_id, role=entry.role)
        request.state.principal = principal  # the refusal log names the client
        return principal
    # Wrong keys are throttled per source (a missing key guesses nothing and is not counted): the peer, or
    # the client a configured trusted proxy forwarded for.
    source = request_source(
        request.client.host if request.client else None, dict(request.scope.get("headers") or []),
        trusted_proxies=request.app.state.settings.trusted_proxies,
    )
    throttle = _throttle(request)
    wait = throttle.retry_after(source)
    if wait is not None:
        raise LimitExceeded("too many wrong API keys from this address; wait before trying again", retry_after=math.ceil(wait),
                            details={"throttle": True})
    throttle.failed(source)
    log.info("wrong API key", extra={"source": source})
    raise Unauthorized("the API key is not valid")


async def require_api_key(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """An admin or client key: a metrics-only key acts for no one."""
    if principal.role == "metrics":
        raise Forbidden(METRICS_ONLY)
    return principal


async def require_metrics_reader(principal: Annotated[Principal, Depends(authenticate)]) -> Principal:
    """/metrics: an admin key or a metrics-only key (a client key would read every client's figures)."""
    if principal.role != "metrics" and not principal.is_admin:
        raise Forbidden("/metrics needs an admin or a metrics-only API key (`orchestrator keys new --metrics-only`)")
    return principal


async def require_admin(principal: Annotated[Principal, Depends(require_api_key)]) -> Principal:
    if not principal.is_admin:
        raise Forbidden("this endpoint needs an admin API key")
    return principal
