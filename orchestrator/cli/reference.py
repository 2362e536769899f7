"""Every setting with its variable, default and meaning, generated from the settings model (pure).

`orchestrator config` prints it with the current values (secrets masked); scripts/config-reference writes
the README's configuration reference from it, and a test fails when the README's copy differs.
A field's own `Field(description=...)` wins over the table below.
"""

from __future__ import annotations

import json
import os
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from orchestrator.core.variables import NOT_SETTINGS, SECRET_VARIABLES
from orchestrator.settings import DEFAULT_TENANTS_FILE, Settings

PREFIX = "ORCH_"

DESCRIPTIONS: dict[str, str] = {
    "scope": "deployment scope label; a deployment only ever touches containers carrying its own scope",
    "tenant_store": "where clients and agents come from: `file` (a YAML file) or `supabase` (the platform project)",
    "tenants_file": "the tenants YAML for the file store (clients, their LiveKit credentials, their agents)",
    "supabase_url": "the platform Supabase project (`clients` table), for the supabase store",
    "supabase_service_key": "service key of the platform Supabase project",
    "supabase_timeout_s": "timeout of one Supabase HTTP request; supabase-py's own GET retries come on top",
    "supabase_retry": "let supabase-py retry GETs on 503/520/network errors (up to 3, 1-4 s apart)",
    "tenant_cache_ttl_s": "how long clients and agents read from Supabase are cached",
    "tenant_cache_max_stale_s": "how long cached entries may bridge a Supabase outage",
    "master_keys": "master keys by id (JSON object of base64 32-byte keys) sealing per-client credentials",
    "master_key_id": "the master key new and rotated credentials are sealed under (one of ORCH_MASTER_KEYS)",
    "allow_unbound_secrets": "during an upgrade only: still open credentials sealed before they were bound to their URLs (then `tenants rewrap`)",
    "agent_memory_max": "ceiling for a per-agent memory override (a higher one is lowered)",
    "agent_network_per_client": "one agent network per client instead of one per deployment (made with the client's first agent)",
    "agent_subnet": "fixed subnet of the deployment's agent network; unset: the first free one of ORCH_AGENT_SUBNET_POOL",
    "agent_subnet_pool": "where agent-network subnets are taken from, skipping subnets other networks use",
    "agent_subnet_prefix": "size of each agent network taken from the pool (a /24 by default)",
    "agent_host_filter": "agents on a network the orchestrator made reach only ORCH_AGENT_HOST_PORTS on the host; "
                         "false = explicit opt-out (on, a host where it cannot be installed refuses to start)",
    "agent_host_ports": "LiveKit's ports on the host agents may reach (`port[-port]/tcp|udp`, comma-separated); on Kubernetes, "
    "LiveKit's RTC/TURN ports its NetworkPolicy allows on each LiveKit address (with the URL's signal port)",
    "agent_egress": "`internet`, or `livekit-only`: agents reach nothing past the host (a forward filter on their bridge only)",
    "livekit_preflight": "start-up check that agents on each agents' network reach each served client's LiveKit: "
                         "`warn` (log + feed), `refuse` (stop the start) or `off`",
    "agent_livekit_url": "the LiveKit URL given to agents; unset: a loopback tenant URL is rewritten to the agent network's gateway",
    "agent_user": "uid:gid every agent runs as, whatever the image's USER says (root is refused)",
    "agent_tmpfs_size": "size of /tmp, the one writable place on an agent's read-only root",
    "agent_runtime": "an engine-level sandbox for agents, e.g. `runsc` (gVisor) registered with the engine",
    "agent_otlp_endpoint": "with tracing on, where agents export their spans (OTLP/HTTP as their network reaches the collector: on the agents' gateway, add its port to ORCH_AGENT_HOST_PORTS); unset: agents export none",
    "agent_image_allowlist": "images agents may run (repositories or digests); unset: ORCH_AGENT_IMAGE's repository only",
    "agent_security_exceptions": "operator-only loosening per `<client>/<slug>` (JSON: user, writable_root, cap_add, runtime, allow_new_privileges)",
    "agent_log_max_size": "json-file log size per agent container before rotation (Docker notation, e.g. `10m`)",
    "agent_log_max_files": "rotated json-file logs kept per agent container",
    "kube_namespace": "Kubernetes namespace of the agent pods (`{scope}` is replaced by the deployment scope)",
    "kubeconfig": "kubeconfig file for ORCH_RUNTIME=kubernetes; unset: in-cluster config, then ~/.kube/config",
    "kube_restricted": "agent pods follow the restricted pod-security profile (non-root, no capabilities, read-only root)",
    "kube_watch_timeout_s": "server-side timeout of one pod watch request before it is renewed",
    "kube_timeout_s": "timeout of one Kubernetes API request",
    "kube_node_selector": "nodeSelector of agent pods (JSON object), e.g. a dedicated agent node pool",
    "kube_tolerations": "tolerations of agent pods (JSON list of Kubernetes tolerations), e.g. for a tainted agent node pool",
    "kube_network_policy": "ensure the agents' NetworkPolicy at start (no ingress; egress to DNS, public addresses, LiveKit's ports on "
    "each LiveKit address, ORCH_KUBE_AGENT_EGRESS)",
    "kube_agent_egress_public": "agents on Kubernetes may reach public addresses (LiveKit Cloud, an LLM API); private ranges stay closed",
    "kube_agent_egress": "extra CIDRs agents on Kubernetes may reach (e.g. an in-cluster LiveKit's Pod range), comma-separated or JSON",
    "dispatch_enabled": "register with each client's LiveKit as an agent worker: dispatched jobs get their own container",
    "dispatch_clients": "client ids whose LiveKit projects to register with (required with the Supabase store)",
    "dispatch_automatic": "also register an unnamed worker per client that takes rooms matching ORCH_DISPATCH_ROOM_PATTERNS",
    "dispatch_room_patterns": "regular expressions (JSON list) of room names automatic dispatch accepts; `agent_id` group names the agent",
    "dispatch_sync_interval_s": "how often registrations follow tenant changes (new, removed agents; rotated credentials)",
    "dispatch_status_interval_s": "how often running jobs' status and the deployment's load are reported to LiveKit",
    "dispatch_reconnect_max_s": "longest back-off between reconnects to a LiveKit that went away",
    "max_body_bytes": "largest request body the API reads (413 beyond; checked before parsing)",
    "max_webhook_body_bytes": "largest LiveKit webhook body read (413 beyond)",
    "agent_cpus_max": "ceiling for a per-agent CPU override",
    "agent_pids_max": "ceiling for a per-agent process-limit override",
    "runtime": "`docker` (one engine), `swarm` (one service per agent on a Docker Swarm, ORCH_DOCKER_HOST = a manager) or "
               "`kubernetes` (one Pod per agent, ORCH_KUBECONFIG)",
    "swarm_placement": "swarm placement constraints per client, `client/agent` or `*` (JSON object of lists)",
    "swarm_spread": "swarm spread preference, e.g. `node.labels.zone` (default: over nodes)",
    "api_keys_file": "YAML file of API-key hashes (`orchestrator keys new --file`); no key at all = auth disabled",
    "ownership_key": "key that signs room ownership stamps; set it (from a secret) when processes run on several hosts",
    "trusted_proxies": "proxy addresses/CIDRs whose X-Forwarded-For names the client for wrong-key throttling",
    "max_waiters_per_client": "concurrent room-wait long-polls of one client; over it the wait answers 429",
    "ownership_key_file": "where the ownership key is generated when ownership_key is unset (default ~/.local/state/...)",
    "agent_image": "image launched for each agent (an agent may name its own)",
    "agent_network": "Docker network of agent containers",
    "agent_memory": "memory limit of an agent container (Docker syntax: 512m, 1g)",
    "agent_cpus": "CPU limit of an agent container, in cores",
    "agent_pids": "process limit of an agent container",
    "agent_restart_policy": "Docker restart policy of agent containers",
    "agent_restart_max": "maximum restarts for the `on-failure` policy",
    "agent_stop_timeout_s": "seconds an agent gets to leave its room after SIGTERM before it is killed",
    "container_start_timeout_s": "how long a trigger waits for a new container to be running",
    "agent_llm_api_key": "the operator's fallback LLM key (OPENAI_API_KEY in agents of clients without a sealed key of their own); unset: offline mode",
    "docker_host": "Docker engine to use (default: DOCKER_HOST, else the local socket)",
    "docker_pool_size": "connections to the Docker engine (at least the calls in flight at once)",
    "docker_timeout_s": "timeout of one Docker API call",
    "docker_retries": "attempts for a Docker call that failed transiently",
    "grace_period_s": "how long an agent stays after the last human left before its room is closed",
    "room_empty_timeout_s": "LiveKit `empty_timeout` of rooms the orchestrator creates (at least the grace period)",
    "user_token_ttl_s": "lifetime of the user token a trigger returns",
    "agent_token_ttl_s": "lifetime of the token an agent joins with",
    "reconcile_enabled": "run the reconcile loop inside `serve` (false when cron or a separate process reconciles)",
    "reconcile_interval_s": "seconds between reconcile passes (webhooks and Docker events wake it sooner)",
    "agent_startup_timeout_s": "an agent that has not joined its room within this is replaced (0 disables)",
    "max_container_lifetime_s": "an agent container older than this is stopped",
    "restart_backoff_s": "first back-off between restarts of a crashed agent with humans present (doubles)",
    "restart_backoff_max_s": "longest back-off between restarts",
    "restart_max_attempts": "restarts of a crashed agent before giving up (and logging an error)",
    "docker_events_enabled": "keep a watch-fed view of our containers (deaths seen at once; reuse and limits answered without engine calls); off: every read asks the engine",
    "view_resync_s": "full relist of the engine behind the watch-fed view, as a safety net",
    "room_resync_s": "once webhooks arrive for a client, how often each of its rooms is still polled (repairs a lost webhook)",
    "room_trust_s": "a trigger skips CreateRoom for a live room LiveKit confirmed within this",
    "livekit_poll_concurrency": "ListParticipants calls in flight per client during a pass",
    "max_agents_per_room": "distinct agents in one room; over it a trigger answers 429",
    "max_agents_per_client": "agent containers of one client; over it a trigger answers 429",
    "max_agents_total": "agent containers of this deployment; over it a trigger answers 429",
    "limit_retry_after_s": "`Retry-After` of a 429 over a limit",
    "usage_sampling_enabled": "sample each agent's CPU and memory in the background (for /metrics and `ps`)",
    "usage_sample_interval_s": "seconds between usage sampling passes",
    "usage_sample_concurrency": "Docker stats calls in flight at once while sampling",
    "event_buffer_size": "lifecycle events kept for the dashboard and /api/v1/admin/events",
    "host": "address `serve` binds (it refuses a non-loopback address while no API key is configured)",
    "port": "port `serve` listens on (the CLI's default ORCH_URL uses it too)",
    "admin_api_key": "one admin API key from the environment (hashed on load), beside ORCH_API_KEYS_FILE",
    "log_format": "`console` (readable) or `json` (one object per line; the image's default)",
    "log_level": "log level of the orchestrator",
}

# Read by the CLI only (not by `serve`): listed by `orchestrator config` too.


@dataclass(frozen=True)
class SettingDoc:
    name: str
    variable: str
    type: str
    default: str
    description: str
    secret: bool


def _type(annotation: Any) -> str:
    """A type as an operator reads it: `text`, `number`, `file | supabase`, `secret`, `JSON object`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return " \\| ".join(str(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type(a) for a in args if a is not type(None))
    if origin is dict:
        return "JSON object"
    if origin is list:
        return "list"
    if origin is typing.Annotated:
        return _type(args[0])
    names = {str: "text", Path: "path", float: "number", int: "integer", bool: "true/false", SecretStr: "secret"}
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _is_secret(field: FieldInfo) -> bool:
    return "SecretStr" in str(field.annotation)


def show(value: Any, *, secret: bool = False) -> str:
    """A value as an operator writes it in the environment; secrets only say whether they are set."""
    if secret:
        return "(set, hidden)" if value not in (None, {}, "") else "-"
    if value is None:
        return "-"
    if value == DEFAULT_TENANTS_FILE:
        return "built-in default_tenants.yaml"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (dict, list)):
        return json.dumps(value) if value else ("{}" if isinstance(value, dict) else "[]")
    if isinstance(value, BaseModel):
        return value.model_dump_json()
    if isinstance(value, (SecretStr, Path)):
        return str(value)
    return str(value)


def setting_docs() -> list[SettingDoc]:
    docs = []
    for name, field in Settings.model_fields.items():
        default = field.get_default(call_default_factory=True)
        docs.append(SettingDoc(
            name=name, variable=PREFIX + name.upper(), type=_type(field.annotation),
            default=show(default), description=field.description or DESCRIPTIONS.get(name, ""),
            secret=_is_secret(field),
        ))
    return docs


def current_rows(settings: Settings) -> list[dict[str, str]]:
    """What `orchestrator config` prints: variable, default, current value (masked when secret), where it came from."""
    rows = []
    for d in setting_docs():
        value = show(getattr(settings, d.name), secret=d.secret)
        rows.append({"variable": d.variable, "default": d.default, "value": value,
                     "source": "env" if d.variable in os.environ else "default", "description": d.description})
    for variable, (default, description) in NOT_SETTINGS.items():
        secret = variable in SECRET_VARIABLES
        raw = os.environ.get(variable)
        rows.append({"variable": variable, "default": default, "value": show(raw, secret=secret),
                     "source": "env" if raw else "default", "description": description})
    return rows


def reference_markdown() -> str:
    """The README's configuration reference (between its config-reference markers)."""
    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| variable | type | default | meaning |", "|---|---|---|---|"]
    for d in setting_docs():
        default = "-" if d.default == "-" else f"`{cell(d.default)}`"
        lines.append(f"| `{d.variable}` | {d.type} | {default} | {cell(d.description)} |")
    lines.append("")
    lines.append("Not settings (the running orchestrator ignores them), read by what each row names:")
    lines.append("")
    lines.append("| variable | default | meaning |")
    lines.append("|---|---|---|")
    for variable, (default, description) in NOT_SETTINGS.items():
        lines.append(f"| `{variable}` | {'-' if default == '-' else f'`{default}`'} | {cell(description)} |")
    return "\n".join(lines) + "\n"


START, END = "<!-- config-reference:start (generated by scripts/config-reference; do not edit) -->", "<!-- config-reference:end -->"


def readme_block(readme: str) -> str | None:
    """The README's current copy of the reference, or None when the markers are missing."""
    if START not in readme or END not in readme:
        return None
    return readme.split(START, 1)[1].split(END, 1)[0].strip("\n") + "\n"


def with_reference(readme: str) -> str:
    head, rest = readme.split(START, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{START}\n{reference_markdown()}{END}{tail}"
