"""Pure row mapping for the Supabase store: a `clients` row to a tenant, an `agents` row to an Agent, error codes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr, ValidationError

from orchestrator.core.errors import Conflict
from orchestrator.core.models import Agent, Client, LiveKitCredentials, Resources
from orchestrator.rules.naming import normalise_slug
from orchestrator.tenants import CredentialsUnusable, TenantRecordInvalid
from orchestrator.tenants.credentials import CredentialError, MasterKeys, open_sealed, unwrap_data_key
from orchestrator.tenants.limits import ResourceCeiling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tenant:
    """A client plus the project its agents live in (its own, or the platform's)."""

    client: Client
    project_url: str
    project_key: SecretStr
    own_project: bool  # the client owns that database outright: nothing in it may pick a container


def tenant_from_row(
    row: dict[str, Any], *, master_keys: MasterKeys, platform_url: str, platform_key: SecretStr, allow_unbound: bool,
) -> Tenant:
    """A `clients` row, its sealed columns opened with the master keys; the platform project unless it has its own."""
    cid = str(row["id"])
    try:
        data_key = unwrap_data_key(master_keys, client_id=cid, wrapped=row["data_key"])
        secret = open_sealed(data_key, client_id=cid, column="livekit_api_secret", token=row["livekit_api_secret"],
                             destination=row["livekit_url"], allow_unbound=allow_unbound)
        own_url, own_key = row.get("supabase_url"), row.get("supabase_service_key")
        project_key = (
            SecretStr(open_sealed(data_key, client_id=cid, column="supabase_service_key", token=own_key,
                                  destination=own_url, allow_unbound=allow_unbound))
            if own_url and own_key else platform_key
        )
        llm = row.get("llm_api_key")
        client = Client(
            id=cid, name=row["name"],
            livekit=LiveKitCredentials(url=row["livekit_url"], api_key=row["livekit_api_key"], api_secret=SecretStr(secret)),
            llm_api_key=SecretStr(open_sealed(data_key, client_id=cid, column="llm_api_key", token=llm, destination=None,
                                              allow_unbound=allow_unbound)) if llm else None,
        )
    except CredentialError as exc:
        # Permanent, and the operator's to fix: the reason (which may name a master-key id) goes
        # to the log only; callers get the client id and what to do.
        log.error("credentials of client %s cannot be decrypted (%s); they stay unusable until re-entered "
                  "with `orchestrator tenants set-credentials` or their master key is configured", cid, exc,
                  extra={"client_id": cid})
        raise CredentialsUnusable(
            f"credentials of client {cid} cannot be decrypted; an operator must re-enter them "
            "(`orchestrator tenants set-credentials`) or configure their master key (see the orchestrator log)"
        ) from None
    except (KeyError, TypeError, ValidationError) as exc:
        raise TenantRecordInvalid(f"client {cid}'s row in the platform project is malformed ({type(exc).__name__})") from None
    return Tenant(
        client=client, project_url=(own_url or platform_url).rstrip("/"), project_key=project_key,
        own_project=bool(own_url and own_key),
    )


def key_directory(rows: list[dict[str, Any]]) -> dict[str, tuple[str, ...]]:
    """Active clients by LiveKit API key (tenants sharing a project share its key)."""
    directory: dict[str, list[str]] = {}
    for r in rows:
        if r.get("active", True):
            directory.setdefault(r["livekit_api_key"], []).append(r["id"])
    return {k: tuple(v) for k, v in directory.items()}


def postgrest_status(code: str | None) -> int | None:
    """The HTTP status behind a PostgREST error code (the SDK keeps the code and drops the status)."""
    if not code:
        return None
    if code.isdigit() and len(code) == 3:
        return int(code)  # no PostgREST body (a proxy page): the SDK puts the HTTP status here
    if code.startswith("PGRST0"):
        return 503  # PostgREST cannot reach its database
    if code.startswith("PGRST3"):
        return 401  # JWT errors
    if code[:2] in ("08", "40", "53", "57", "58"):
        return 503  # SQLSTATE: connection, rollback (deadlock), resources, operator intervention, system
    return 400  # request, schema and other SQL errors: the same query fails the same way


def agent_from_row(row: dict[str, Any], *, client_id: str, ceiling: ResourceCeiling | None) -> Agent:
    """An `agents` row with its embedded configuration (object, one-element list, or null) as an Agent.

    The container columns (image, memory, cpus, pids) count only where the operator wrote them (the
    platform project, clamped to `ceiling`); `ceiling=None` means the client owns the project, so they
    are ignored and the deployment's defaults apply.
    """
    cfg = row.get("agent_configurations") or {}
    if isinstance(cfg, list):
        cfg = cfg[0] if cfg else {}
    slug = str(row.get("slug", ""))
    if normalise_slug(slug) != slug:
        raise Conflict(
            f"agent {row.get('id')} of client {client_id} has the non-canonical slug '{slug}' in its project; "
            f"rename it to '{normalise_slug(slug)}'"
        )
    try:
        resources = Resources()
        if ceiling is not None:
            try:
                resources = ceiling.clamp(Resources(
                    memory=cfg.get("memory"),
                    cpus=float(cfg["cpus"]) if cfg.get("cpus") is not None else None,
                    pids=cfg.get("pids"),
                ))
            except ValueError as exc:
                raise Conflict(
                    f"agent {row.get('id')} of client {client_id}: {exc}; the operator must set a value up to {ceiling.memory}"
                ) from None
        return Agent(
            id=str(row["id"]), slug=slug, name=row["name"],
            instructions=cfg.get("instructions") or "", voice=cfg.get("voice") or "alloy",
            greeting=cfg.get("greeting") or "", model=cfg.get("model") or "",
            image=(cfg.get("image") or None) if ceiling is not None else None,
            resources=resources,
        )
    except (KeyError, TypeError, ValueError, ValidationError) as exc:
        raise TenantRecordInvalid(f"agent {row.get('id')} of client {client_id} is malformed in its project ({type(exc).__name__})") from None
