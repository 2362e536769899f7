"""FastAPI dependencies as Annotated aliases, so route signatures read as declarations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated

from fastapi import Depends, Request

from orchestrator.core.errors import DependencyError
from orchestrator.livekit.service import RoomService
from orchestrator.observability.events import EventFeed
from orchestrator.services.informer import Informer
from orchestrator.observability.metrics import Metrics
from orchestrator.services.sampler import UsageSampler
from orchestrator.services.operations import Operations
from orchestrator.services.reconciler import Reconciler
from orchestrator.runtime import ContainerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.services.trigger import TriggerService
from orchestrator.services.webhooks import WebhookIntake

from api.auth import Principal, require_admin, require_api_key


def _clock(request: Request) -> Callable[[], datetime]:
    return request.app.state.engine.clock


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _trigger(request: Request) -> TriggerService:
    return request.app.state.trigger


def _runtime(request: Request) -> ContainerRuntime:
    return request.app.state.runtime


def _livekit(request: Request) -> RoomService:
    return request.app.state.livekit


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
ClockDep = Annotated[Callable[[], datetime], Depends(_clock)]  # the engine's one clock
TriggerDep = Annotated[TriggerService, Depends(_trigger)]
RuntimeDep = Annotated[ContainerRuntime, Depends(_runtime)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]
LiveKitDep = Annotated[RoomService, Depends(_livekit)]


def _reconciler(request: Request) -> Reconciler:
    return request.app.state.reconciler


def _intake(request: Request) -> WebhookIntake:
    return request.app.state.webhooks


def _tenants(request: Request) -> TenantStore:
    return request.app.state.tenants


def _informer(request: Request) -> Informer:
    return request.app.state.informer


ReconcilerDep = Annotated[Reconciler, Depends(_reconciler)]


def _operations(request: Request) -> Operations:
    return request.app.state.operations


OperationsDep = Annotated[Operations, Depends(_operations)]
InformerDep = Annotated[Informer, Depends(_informer)]
WebhookIntakeDep = Annotated[WebhookIntake, Depends(_intake)]
TenantsDep = Annotated[TenantStore, Depends(_tenants)]
# Authentication (api/auth.py): a route that declares one of these needs an API key.
PrincipalDep = Annotated[Principal, Depends(require_api_key)]
AdminDep = Annotated[Principal, Depends(require_admin)]


def _feed(request: Request) -> EventFeed:
    return request.app.state.feed


def _sampler(request: Request) -> UsageSampler:
    return request.app.state.sampler


FeedDep = Annotated[EventFeed, Depends(_feed)]
SamplerDep = Annotated[UsageSampler, Depends(_sampler)]


def count_dependency(metrics: Metrics, exc: Exception) -> None:
    """A failed request that a dependency caused counts against that dependency (the adapter says which)."""
    if isinstance(exc, DependencyError):
        metrics.dependency_errors.labels(dependency=exc.dependency).inc()
