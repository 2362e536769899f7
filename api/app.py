"""The FastAPI app factory: nothing is built at import time; adapters are injectable for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from orchestrator import __version__
from orchestrator.livekit import LiveKitGateway
from orchestrator.metrics import Metrics
from orchestrator.runtime import ContainerRuntime
from orchestrator.runtime.docker import DockerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.trigger import TriggerService

from . import errors
from .routes import health, metrics, trigger


def build_tenants(settings: Settings) -> TenantStore:
    return FileTenantStore(settings.tenants_file)


def create_app(
    settings: Settings, *, runtime: ContainerRuntime | None = None, tenants: TenantStore | None = None
) -> FastAPI:
    """Wire adapters once per app; tests pass their own runtime or tenant store."""
    runtime = runtime or DockerRuntime(
        base_url=settings.docker_host, pool_size=settings.docker_pool_size,
        timeout_s=settings.docker_timeout_s, retries=settings.docker_retries,
    )
    tenants = tenants or build_tenants(settings)
    livekit = LiveKitGateway()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await livekit.aclose()
        runtime.close()

    app = FastAPI(title="Agent container orchestrator", version=__version__, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = Metrics()
    app.state.trigger = TriggerService(settings=settings, tenants=tenants, livekit=livekit, runtime=runtime)
    errors.install(app)
    app.include_router(health.router)
    app.include_router(trigger.router)
    app.include_router(metrics.router)
    return app
