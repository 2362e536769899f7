"""Picks the tenant store a deployment's settings ask for (the API and the cron CLI share it)."""

from __future__ import annotations

from ..settings import Settings
from . import TenantStore
from .file_store import FileTenantStore


def tenant_store(settings: Settings) -> TenantStore:
    if settings.tenant_store == "supabase":
        from .supabase_store import store_from_settings  # supabase-py only where it is used

        return store_from_settings(settings)
    return FileTenantStore(settings.tenants_file)
