"""The FastAPI app factory: nothing is built at import time; adapters are injectable for tests."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.core.apikeys import FailureThrottle, KeyRing
from orchestrator.core.clock import utcnow
from orchestrator.composition import Orchestrator
from orchestrator.livekit.service import RoomService
from orchestrator.observability.refusals import Refusals
from orchestrator.runtime import ContainerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore

from api import errors
from api.guards import RequestGuards, Scope
from api.routes import (
    admin, dashboard, dispatch, docs, events, health, metrics, progress, rooms, spawn, tenants_admin, trigger, webhook,
)

log = logging.getLogger(__name__)


def build_keyring(settings: Settings) -> KeyRing:
    ring = KeyRing.load(path=settings.api_keys_file, admin_key=settings.admin_api_key)
    if not ring.enabled:
        log.warning(
            "NO API KEYS CONFIGURED: authentication is DISABLED (embedded local default). Anyone who can reach "
            "this port can trigger agents. Set ORCH_API_KEYS_FILE or ORCH_ADMIN_API_KEY before exposing it; "
            "`orchestrator serve` refuses non-loopback addresses until you do."
        )
    return ring


def _telemetry(engine: Orchestrator) -> dict[str, Any]:
    """FastAPI's own OpenTelemetry: with tracing on, each /api/ request is a server span on our provider that
    continues an incoming W3C `traceparent` (and the start's spans are its children). With tracing off, nothing,
    even when some library installed a global provider. Never its metrics (ours are Prometheus) or its logs
    (they would carry exception messages and request values)."""
    config: dict[str, Any] = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False, "auto_configure": False}
    if engine.tracing.enabled:
        # Requests that change something (starts, closes, webhooks); reads and polls (`/starts`, `/wait`, progress)
        # would bury the starts in a trace search.
        config.update(tracing=True, tracer_provider=engine.tracing.provider,
                      exclude=lambda scope: scope.get("method") in ("GET", "HEAD", "OPTIONS")
                      or not str(scope.get("path", "")).startswith("/api/"))
    return config


def create_app(
    settings: Settings,
    *,
    runtime: ContainerRuntime | None = None,
    tenants: TenantStore | None = None,
    livekit: RoomService | None = None,
    clock: Callable[[], datetime] = utcnow,
) -> FastAPI:
    """The HTTP face of one Engine; the engine starts and stops with the app. Tests pass their own adapters."""
    engine = Orchestrator(settings, runtime=runtime, tenants=tenants, livekit=livekit, clock=clock)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            await engine.start()
            yield
        finally:
            await engine.stop()

    app = FastAPI(
        title="Agent container orchestrator", version=__version__, lifespan=lifespan,
        generate_unique_id_function=errors.operation_id,  # stable ids: the route function's name
        responses=errors.COMMON_RESPONSES,
        docs_url=None, redoc_url=None,  # /docs from vendored files (routes/docs.py), never a CDN
        telemetry=_telemetry(engine),
    )
    app.state.engine = engine
    app.state.settings = settings
    app.state.runtime = engine.runtime
    app.state.metrics = engine.metrics
    app.state.telemetry = engine.telemetry
    app.state.feed = engine.telemetry.feed
    app.state.sampler = engine.sampler
    app.state.trigger = engine.trigger
    app.state.livekit = engine.livekit
    app.state.tenants = engine.tenants
    app.state.api_keys = build_keyring(settings)
    app.state.reconciler = engine.reconciler
    app.state.operations = engine.operations
    app.state.informer = engine.informer
    app.state.webhooks = engine.webhooks
    app.state.dispatch = engine.dispatch
    app.state.starts = engine.starts
    app.state.refusals = refusals = Refusals(engine.metrics)
    errors.install(app)

    def guard_refused(scope: Scope, status: int, code: str, detail: str) -> None:
        refusals.refused(status=status, code=code, message=detail, method=scope.get("method", ""), path=scope.get("path", ""),
                         details={"throttle": True} if status == 429 else None)

    app.add_middleware(
        RequestGuards, keyring=lambda: app.state.api_keys, throttle=lambda: app.state.auth_failures,
        trusted_proxies=lambda: app.state.settings.trusted_proxies,
        body_limit=settings.max_body_bytes, webhook_body_limit=settings.max_webhook_body_bytes, on_refuse=guard_refused,
    )
    app.state.auth_failures = FailureThrottle()  # wrong keys, per source: the guard and api/auth.py count together
    app.include_router(health.router)
    app.include_router(trigger.router)
    app.include_router(webhook.router)
    app.include_router(admin.router)
    app.include_router(dispatch.router)
    app.include_router(metrics.router)
    app.include_router(spawn.router)
    app.include_router(progress.router)  # before rooms: its fixed paths must not read as a room name
    app.include_router(rooms.router)
    app.include_router(tenants_admin.router)
    app.include_router(events.router)
    app.include_router(dashboard.router)
    dashboard.mount_static(app)
    docs.install(app)
    return app
