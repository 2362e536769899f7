"""Picks the tenant store a deployment's settings ask for (the API and the cron CLI share it)."""

from __future__ import annotations

from orchestrator.settings import Settings
from orchestrator.tenants import TenantStore
from orchestrator.tenants.file_store import FileTenantStore


def tenant_store(settings: Settings) -> TenantStore:
    if settings.tenant_store == "supabase":
        from orchestrator.tenants.supabase_store import store_from_settings  # supabase-py only where it is used

        return store_from_settings(settings)
    return FileTenantStore(settings.tenants_file)
