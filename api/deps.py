"""FastAPI dependencies as Annotated aliases, so route signatures read as declarations."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from orchestrator.runtime import ContainerRuntime
from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.trigger import TriggerService

from .auth import Principal, require_admin, require_api_key


def _settings(request: Request) -> Settings:
    return request.app.state.settings


def _trigger(request: Request) -> TriggerService:
    return request.app.state.trigger


def _runtime(request: Request) -> ContainerRuntime:
    return request.app.state.runtime


def _tenants(request: Request) -> TenantStore:
    return request.app.state.tenants


SettingsDep = Annotated[Settings, Depends(_settings)]
TriggerDep = Annotated[TriggerService, Depends(_trigger)]
RuntimeDep = Annotated[ContainerRuntime, Depends(_runtime)]
TenantsDep = Annotated[TenantStore, Depends(_tenants)]
# Authentication (api/auth.py): a route that declares one of these needs an API key.
PrincipalDep = Annotated[Principal, Depends(require_api_key)]
AdminDep = Annotated[Principal, Depends(require_admin)]
