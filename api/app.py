"""The FastAPI app factory: nothing is built at import time; adapters are injectable for tests."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.apikeys import KeyRing
from orchestrator.livekit import LiveKitGateway
from orchestrator.errors import TemporaryError
from orchestrator.events import EventFeed
from orchestrator.metrics import Metrics
from orchestrator.informer import Informer
from orchestrator.models import ContainerInfo, ContainerKey, Mode
from orchestrator.naming import Label, key_from_labels
from orchestrator.clock import utcnow
from orchestrator.reconciler import Reconciler
from orchestrator.rooms import AgentLaunched, RoomRegistry
from orchestrator.runtime import ContainerRuntime, WatchEvent
from orchestrator.runtime.factory import runtime_from_settings
from orchestrator.sampler import UsageSampler
from orchestrator.settings import Settings
from orchestrator.telemetry import Telemetry
from orchestrator.tenants import TenantStore
from orchestrator.tenants.factory import tenant_store
from orchestrator.trigger import TriggerService
from orchestrator.view import AgentView, change_signal
from orchestrator.webhooks import WebhookIntake

from . import errors
from .routes import admin, dashboard, events, health, metrics, spawn, tenants_admin, trigger, webhook

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


async def ensure_agent_network(trigger_service: TriggerService) -> None:
    """Make the agents' network at start: a bad network setting stops us here, not at the first trigger.

    An engine that is down now is not fatal (the first trigger makes the network instead), as for every
    other Docker call."""
    try:
        await trigger_service.networks.ensure_default()
    except TemporaryError as exc:
        log.warning("agent network not ready at start (%s); the first trigger makes it", exc.message)


def create_app(
    settings: Settings, *, runtime: ContainerRuntime | None = None, tenants: TenantStore | None = None
) -> FastAPI:
    """Wire adapters once per app; tests pass their own runtime or tenant store."""
    runtime = runtime or runtime_from_settings(settings)
    tenants = tenants or tenant_store(settings)
    livekit = LiveKitGateway()
    registry = RoomRegistry()
    metrics_ = Metrics()
    telemetry = Telemetry(metrics=metrics_, feed=EventFeed(size=settings.event_buffer_size))
    sampler = UsageSampler(
        runtime=runtime, scope=settings.scope, interval_s=settings.usage_sample_interval_s,
        concurrency=settings.usage_sample_concurrency,
        on_error=lambda dependency: metrics_.dependency_errors.labels(dependency=dependency).inc(),
    )

    def launched(key: ContainerKey) -> None:
        registry.apply(key.client_id, key.room, AgentLaunched(), now=utcnow())

    view = AgentView()
    trigger_service = TriggerService(
        settings=settings, tenants=tenants, livekit=livekit, runtime=runtime, on_launched=launched,
        view=view, rooms=registry,
    )
    reconciler = Reconciler(
        settings=settings, runtime=runtime, tenants=tenants, livekit=livekit, launcher=trigger_service, registry=registry,
        on_pass=telemetry.reconcile_pass, view=view,
    )
    stream_broken = False
    background: set[asyncio.Task[None]] = set()  # re-settles in flight (held so they are not garbage-collected)

    def on_view_change(event: WatchEvent, before: ContainerInfo | None) -> None:
        """Deaths, unhealthy agents and removals wake the reconciler; after a broken stream, one catch-up pass."""
        nonlocal stream_broken
        if event.kind in ("broken", "relist"):
            if event.kind == "relist" and stream_broken:
                telemetry.container_event("reconnected", "")
                reconciler.wake()
            stream_broken = event.kind == "broken"
        elif (action := change_signal(event, before)) is not None and event.info is not None:
            telemetry.container_event(action, event.info.name)
            reconciler.wake()
            if action == "die" and (key := key_from_labels(event.info.labels)) is not None:
                registry.unconfirm(key.client_id, key.room)
            if action in ("die", "destroy") and (key := trigger_service.answered_from_view(before or event.info)):
                mode = Mode((before or event.info).labels.get(Label.MODE, Mode.voice.value))
                background.add(task := asyncio.create_task(trigger_service.resettle(key, mode=mode)))
                task.add_done_callback(background.discard)

    informer = Informer(runtime=runtime, scope=settings.scope, view=view, resync_s=settings.view_resync_s, on_change=on_view_change)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        task = watching = sampling = None
        await ensure_agent_network(trigger_service)
        if settings.usage_sampling_enabled:
            sampling = asyncio.create_task(sampler.run_forever(), name="usage-sampler")
        if settings.docker_events_enabled:
            # The watch-fed view: reuse and limits answered without engine calls, deaths seen at once.
            watching = asyncio.create_task(informer.run_forever(), name="informer")
        if settings.reconcile_enabled:
            # The first pass rebuilds room state from Docker labels + LiveKit (nothing else survives a restart).
            task = asyncio.create_task(reconciler.run_forever(), name="reconciler")
        yield
        for running in (task, sampling, watching):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        await livekit.aclose()
        runtime.close()
        aclose = getattr(tenants, "aclose", None)
        if aclose is not None:
            await aclose()

    app = FastAPI(title="Agent container orchestrator", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = metrics_
    app.state.telemetry = telemetry
    app.state.feed = telemetry.feed
    app.state.sampler = sampler
    metrics_.agent_limit.labels(limit="total").set(settings.max_agents_total)
    metrics_.agent_limit.labels(limit="per_client").set(settings.max_agents_per_client)
    app.state.trigger = trigger_service
    app.state.tenants = tenants
    app.state.api_keys = build_keyring(settings)
    app.state.reconciler = reconciler
    app.state.informer = informer
    app.state.webhooks = WebhookIntake(
        registry=registry, on_change=reconciler.wake,
        on_event=lambda notice, client_id, before, after: telemetry.room_event(notice.event, notice.identity, client_id, before, after),
    )
    errors.install(app)
    app.include_router(health.router)
    app.include_router(trigger.router)
    app.include_router(webhook.router)
    app.include_router(admin.router)
    app.include_router(metrics.router)
    app.include_router(spawn.router)
    app.include_router(tenants_admin.router)
    app.include_router(events.router)
    app.include_router(dashboard.router)
    dashboard.mount_static(app)
    return app
