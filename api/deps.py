"""FastAPI dependencies as Annotated aliases, so route signatures read as declarations."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.events import EventFeed
from orchestrator.informer import Informer
from orchestrator.metrics import Metrics
from orchestrator.sampler import UsageSampler
from orchestrator.reconciler import Reconciler
from orchestrator.runtime import ContainerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.trigger import TriggerService
from orchestrator.webhooks import WebhookIntake

from .auth import Principal, require_admin, require_api_key


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _trigger(request: Request) -> TriggerService:
    return request.app.state.trigger


def _runtime(request: Request) -> ContainerRuntime:
    return request.app.state.runtime


def _metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[Settings, Depends(_settings)]
TriggerDep = Annotated[TriggerService, Depends(_trigger)]
RuntimeDep = Annotated[ContainerRuntime, Depends(_runtime)]
MetricsDep = Annotated[Metrics, Depends(_metrics)]


def _reconciler(request: Request) -> Reconciler:
    return request.app.state.reconciler


def _intake(request: Request) -> WebhookIntake:
    return request.app.state.webhooks


def _tenants(request: Request) -> TenantStore:
    return request.app.state.tenants


def _informer(request: Request) -> Informer:
    return request.app.state.informer


ReconcilerDep = Annotated[Reconciler, Depends(_reconciler)]
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
