"""One validated settings object, built once at start-up and passed down (never read at import)."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from orchestrator.rules.isolation import DEFAULT_HOST_PORTS, is_root_user, parse_host_port, split_image
from orchestrator.core.resources import MIN_MEMORY_BYTES, memory_bytes
from orchestrator.core.setting_values import PLACEHOLDER_SECRETS, SettingsProblem, is_placeholder, settings_error_line
from orchestrator.core.variables import unknown_variables

log = logging.getLogger(__name__)

DEFAULT_TENANTS_FILE = Path(__file__).parent / "tenants" / "default_tenants.yaml"

_NETWORK = re.compile(r"^(container:)?[A-Za-z0-9][A-Za-z0-9_.-]*$")


class AgentSecurityException(BaseModel):
    """What an operator may loosen for one agent; everything else stays hardened."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    writable_root: bool = False
    cap_add: list[str] = []
    user: str | None = None  # may be root: the operator's explicit choice
    allow_new_privileges: bool = False
    runtime: str | None = None


class Settings(BaseSettings):
    """Every knob of a deployment. Env prefix `ORCH_`; an optional `.env`-style file via ORCH_ENV_FILE."""

    model_config = SettingsConfigDict(env_prefix="ORCH_", extra="ignore", frozen=True)

    # Which containers this deployment owns: it never touches another scope's.
    scope: str = Field(default="default", pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")

    # Tenants: the embedded default is a YAML file; "supabase" reads the platform project's `clients`.
    tenant_store: Literal["file", "supabase"] = "file"
    tenants_file: Path = DEFAULT_TENANTS_FILE
    supabase_url: str | None = Field(default=None, pattern=r"^https?://")  # the platform project
    supabase_service_key: SecretStr | None = None
    supabase_timeout_s: float = Field(default=5.0, gt=0)  # per HTTP request; supabase-py's own GET retries come on top
    supabase_retry: bool = True  # supabase-py retries GETs on 503/520/network errors (up to 3, 1-4 s apart)
    tenant_cache_ttl_s: float = Field(default=60.0, ge=0)
    tenant_cache_max_stale_s: float = Field(default=3600.0, ge=0)  # how long an outage may be bridged by the cache
    # Credentials at rest: master keys by id (JSON object of base64 32-byte keys) and the id new rows use.
    master_keys: dict[str, SecretStr] = {}
    master_key_id: str | None = None
    # Accept secrets sealed before they were bound to their URL (`v1:`): only while upgrading, until
    # `orchestrator tenants rewrap` has bound every row. Off, a re-pointed URL can never receive a secret.
    allow_unbound_secrets: bool = False

    # API keys: a YAML file of sha256 hashes (never the keys); no key configured at all = auth disabled.
    api_keys_file: Path | None = None
    # Room ownership stamps (HMAC over client, room, creation time): the key every process of the deployment
    # signs with. Unset: generated once into ownership_key_file (default under ~/.local/state; see signing_key).
    ownership_key: SecretStr | None = None
    ownership_key_file: Path | None = None
    # Addresses (or CIDRs) of reverse proxies whose X-Forwarded-For is believed: wrong-key throttling then counts
    # the forwarded client, not the proxy every tenant comes through. Empty: the peer address is the client.
    trusted_proxies: list[str] = []

    # The agent containers.
    agent_image: str = "agent-orchestrator/agent:latest"
    # Isolation: "" = a network the orchestrator makes (`orch-agents-<scope>`, or one per client); a name = that
    # network (made, labelled ours, when missing); "host" = the explicit opt-out (agents reach the host's loopback).
    agent_network: str = ""
    agent_network_per_client: bool = False
    agent_subnet: str | None = None  # fixed subnet of the deployment network; else the first free one of the pool
    agent_subnet_pool: Annotated[list[str], NoDecode] = ["172.29.0.0/16"]
    agent_subnet_prefix: int = Field(default=24, ge=8, le=29)
    # The host filter on a network the orchestrator made: agents reach these ports on its gateway (LiveKit's) and
    # nothing else of the host. Off only as an explicit opt-out; on, a host where it cannot be installed refuses to start.
    agent_host_filter: bool = True
    agent_host_ports: Annotated[list[str], NoDecode] = list(DEFAULT_HOST_PORTS)
    agent_egress: Literal["internet", "livekit-only"] = "internet"  # livekit-only: nothing past the host either
    # Start-up check that an agent on each agents' network reaches each served client's LiveKit (a probe container).
    livekit_preflight: Literal["warn", "refuse", "off"] = "warn"
    # The LiveKit URL agents get; unset = the tenant's URL, a loopback host rewritten to the network's gateway.
    agent_livekit_url: str | None = Field(default=None, pattern=r"^wss?://")
    agent_user: str = "10001:10001"  # every agent runs as this, whatever the image's USER says
    agent_tmpfs_size: str = "64m"  # the one writable place (/tmp) on a read-only root filesystem
    agent_runtime: str | None = None  # e.g. "runsc" (gVisor), registered with the engine
    # Where agents send spans (OTLP/HTTP, as their network reaches the collector: on the gateway, add its port to
    # agent_host_ports); with tracing on each agent gets it as OTEL_EXPORTER_OTLP_ENDPOINT beside its TRACEPARENT.
    agent_otlp_endpoint: str | None = Field(default=None, pattern=r"^https?://")
    # Repositories (any tag), `repo@sha256:…` or `sha256:…` digests agents may run; empty = ORCH_AGENT_IMAGE's repository.
    agent_image_allowlist: Annotated[list[str], NoDecode] = []
    # Operator-only loosening per agent, keyed `<client id>/<agent slug>` (JSON object); never tenant-writable.
    agent_security_exceptions: dict[str, AgentSecurityException] = {}
    agent_memory: str = "512m"
    agent_cpus: float = Field(default=1.0, gt=0)
    agent_pids: int = Field(default=256, gt=0)
    agent_restart_policy: Literal["no", "on-failure", "unless-stopped", "always"] = "on-failure"
    agent_restart_max: int = Field(default=3, ge=0)
    agent_stop_timeout_s: int = Field(default=10, ge=1)
    # Docker's json-file driver keeps agent logs forever unless capped: at most max_files × max_size per agent.
    agent_log_max_size: str = Field(default="10m", pattern=r"^[1-9][0-9]*[kmg]$")
    agent_log_max_files: int = Field(default=3, ge=1, le=100)
    container_start_timeout_s: float = Field(default=30.0, gt=0)
    # The most a tenant store may give one agent (per-agent overrides are lowered to these; '0' = no
    # memory limit is refused).
    agent_memory_max: str = "4g"
    agent_cpus_max: float = Field(default=4.0, gt=0)
    agent_pids_max: int = Field(default=4096, gt=0)
    # The operator's fallback LLM key, given as OPENAI_API_KEY to agents of clients that have no sealed
    # key of their own (clients.llm_api_key); unset: those agents run the offline mode. Env only.
    agent_llm_api_key: SecretStr | None = None
    # Warm pool (services.pool): members per isolation domain, made ahead and claimed by a start. The target
    # follows the recent claim rate (rate × warm time × 2) within [min, max], on engines that keep members.
    pool_min: int = Field(default=2, ge=0, description="Warm pool: members kept per isolation domain at least")
    pool_max: int = Field(default=10, ge=0, description="Warm pool: members per domain at most; 0 turns the pool off")
    pool_refill_concurrency: int = Field(default=4, ge=1, description="Warm pool: members made at once per domain")
    pool_max_age_s: float = Field(default=3600.0, gt=0, description="Warm pool: an idle member is recycled after this")
    pool_sweep_s: float = Field(default=5.0, gt=0, description="Warm pool: how often members are re-read from the engine and recycled")
    pool_handover: Literal["auto", "stdin-v1", "livekit-lobby-v1"] = Field(default="auto", description="Warm pool: how a member gets its "
        "assignment; auto = a LiveKit lobby for sandboxed runtimes (runsc, kata: slow first connect), else the engine's own")

    # Which engine runs the agents: one Docker engine, a Docker Swarm (one service per agent, any node),
    # or Kubernetes (one Pod per agent).
    runtime: Literal["docker", "swarm", "kubernetes"] = "docker"
    # Swarm placement constraints by "*" (every agent), a client id, or "client/slug" (all that match apply),
    # e.g. {"acme": ["node.labels.tenant==acme"]}; and an optional spread preference (e.g. node.labels.zone).
    swarm_placement: dict[str, list[str]] = {}
    swarm_spread: str | None = None

    # Docker access (for a swarm: a manager's socket or address).
    docker_host: str | None = None  # default: DOCKER_HOST or the local socket
    docker_pool_size: int = Field(default=32, ge=2)
    docker_timeout_s: float = Field(default=30.0, gt=0)
    docker_retries: int = Field(default=3, ge=1)

    # Kubernetes (ORCH_RUNTIME=kubernetes): the namespace of this deployment's agent pods ("{scope}" is replaced by the scope),
    # a kubeconfig file (default: in-cluster when run in a pod, else KUBECONFIG or ~/.kube/config).
    kube_namespace: str = "agents-{scope}"
    kubeconfig: Path | None = None
    kube_restricted: bool = True  # agent pods meet the `restricted` Pod Security Standard
    # Where agent pods may run: a nodeSelector and tolerations (JSON), e.g. a dedicated, tainted node pool.
    kube_node_selector: dict[str, str] = {}
    kube_tolerations: list[dict[str, str | int]] = []
    kube_watch_timeout_s: int = Field(default=300, ge=1)  # server-side watch timeout; the watch then resumes
    kube_timeout_s: float = Field(default=30.0, gt=0)
    # The agents' NetworkPolicy (ensured at start in their namespace): no ingress; egress to DNS, to public addresses
    # (LiveKit Cloud, an LLM API) unless turned off, and to the CIDRs listed (e.g. an in-cluster LiveKit's Pods).
    kube_network_policy: bool = True
    kube_agent_egress_public: bool = True
    kube_agent_egress: Annotated[list[str], NoDecode] = []

    # Room lifecycle: the grace period after the last human leaves.
    grace_period_s: float = Field(default=60.0, ge=0)
    room_empty_timeout_s: int = Field(default=300, ge=1)
    # Tokens live as long as joining needs, no longer: a room name can be another tenant's after ours closes.
    # LiveKit checks a token when a participant joins (and refreshes connected ones itself), so a user must
    # join within user_token_ttl_s of the trigger; an agent container restarted in place after agent_token_ttl_s
    # cannot rejoin (the reconciler replaces it with a fresh token).
    user_token_ttl_s: int = Field(default=300, ge=60)
    agent_token_ttl_s: int = Field(default=900, ge=60)

    # Reconciler: the periodic pass is the safety net behind webhooks and Docker events.
    reconcile_enabled: bool = True  # run the loop inside `serve`; cron deployments set it false
    reconcile_interval_s: float = Field(default=30.0, gt=0)
    agent_startup_timeout_s: float = Field(default=30.0, ge=0)  # 0 disables: agent must join within this
    max_container_lifetime_s: float = Field(default=6 * 3600.0, gt=0)
    restart_backoff_s: float = Field(default=2.0, ge=0)  # first retry immediate, then 2, 4, 8 ... s
    restart_backoff_max_s: float = Field(default=60.0, ge=0)
    restart_max_attempts: int = Field(default=5, ge=0)  # then give up and report
    # The watch-fed view of our containers (the runtime's event stream; deaths seen at once, reuse and limits
    # answered without engine calls); a full relist every view_resync_s is the safety net. Off: every read asks the engine.
    docker_events_enabled: bool = True
    view_resync_s: float = Field(default=300.0, gt=0)
    # Rooms: once webhooks are seen for a client, its rooms are polled only every room_resync_s (the sweep
    # that repairs a lost webhook); a trigger skips CreateRoom for a live room confirmed within room_trust_s.
    room_resync_s: float = Field(default=120.0, gt=0)
    room_trust_s: float = Field(default=60.0, ge=0)
    livekit_poll_concurrency: int = Field(default=16, ge=1)  # ListParticipants calls in flight per client

    # Limits: over one, the trigger answers 429 with Retry-After.
    max_agents_per_room: int = Field(default=4, ge=1)  # distinct agent slugs sharing a room
    max_agents_per_client: int = Field(default=20, ge=1)
    max_agents_total: int = Field(default=50, ge=1)
    max_waiters_per_client: int = Field(default=10, ge=1)  # concurrent /rooms/{room}/wait long-polls per client
    limit_retry_after_s: int = Field(default=10, ge=1)

    # Operator surface: per-agent CPU/memory sampled in the background, never inside a scrape.
    usage_sampling_enabled: bool = True
    usage_sample_interval_s: float = Field(default=15.0, gt=0)
    # Engine 20.10 answers a one-shot stats call on its collector's next 1 s tick: a pass takes ~N/concurrency s.
    usage_sample_concurrency: int = Field(default=8, ge=1)  # stats calls in flight at once (of docker_pool_size)
    event_buffer_size: int = Field(default=500, ge=10)  # lifecycle events kept for the dashboard / SSE

    # LiveKit dispatch: register as an agent worker per (client, agent slug) and run each dispatched job
    # in its own container. Off by default: triggers keep working without it.
    dispatch_enabled: bool = False
    dispatch_clients: list[str] = []  # client ids to serve; empty = every client the tenant store lists
    # Also register unnamed (automatic dispatch: every new room), taking only rooms that match a pattern.
    dispatch_automatic: bool = False
    # Regexes over the room name; the agent comes from room/job metadata ({"agent_id"|"agent_slug": ...})
    # or else the pattern's named group `agent_id` or `agent_slug`. Default: `agent-<agent_id>-<suffix>`.
    dispatch_room_patterns: list[str] = [r"^agent-(?P<agent_id>.+)-[A-Za-z0-9]+$"]
    dispatch_sync_interval_s: float = Field(default=30.0, gt=0)  # how soon registrations follow tenant changes
    dispatch_status_interval_s: float = Field(default=2.5, gt=0)  # load reports and job-end checks
    dispatch_reconnect_max_s: float = Field(default=30.0, gt=0)  # backoff cap while LiveKit is away

    # HTTP server.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=1, le=65535)
    admin_api_key: SecretStr | None = None
    # Bodies larger than these are refused (413) before they are read or parsed.
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_webhook_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    log_format: Literal["json", "console"] = "console"
    log_level: str = "INFO"

    @field_validator("agent_memory")
    @classmethod
    def _docker_memory(cls, v: str) -> str:
        try:
            too_small = memory_bytes(v) < MIN_MEMORY_BYTES
        except ValueError:
            too_small = True
        if too_small:
            raise ValueError(
                f"not a memory size: a whole number with an optional unit b, k, m or g (e.g. 512m), "
                f"at least {MIN_MEMORY_BYTES // 2**20}m"
            )
        return v

    @field_validator("agent_network")
    @classmethod
    def _network_name(cls, v: str) -> str:
        if v and not _NETWORK.match(v):  # "" = a network the orchestrator makes
            raise ValueError("not a network name (letters, digits, '_', '.', '-'; or container:<name>); "
                             "leave it unset for a network the orchestrator makes")
        return v

    @field_validator("admin_api_key")
    @classmethod
    def _no_placeholder_key(cls, v: SecretStr | None) -> SecretStr | None:
        from orchestrator.core.apikeys import weakness  # pure

        if v is not None and is_placeholder(v.get_secret_value()):
            raise ValueError("ORCH_ADMIN_API_KEY is a placeholder; set a real random key (e.g. `openssl rand -hex 32`)")
        if v is not None and (problem := weakness(v.get_secret_value())):
            raise ValueError(f"ORCH_ADMIN_API_KEY {problem}; set a random key (e.g. `openssl rand -hex 32`)")
        return v

    @field_validator("agent_subnet_pool", "agent_image_allowlist", "kube_agent_egress", "agent_host_ports", mode="before")
    @classmethod
    def _comma_list(cls, v: object) -> object:
        """A JSON list or a plain comma-separated list (`repo-a, repo-b`)."""
        if isinstance(v, str):
            text = v.strip()
            if text.startswith("["):
                import json

                return json.loads(text)
            return [part.strip() for part in text.split(",") if part.strip()]
        return v

    @field_validator("agent_host_ports")
    @classmethod
    def _valid_host_ports(cls, v: list[str]) -> list[str]:
        return [str(parse_host_port(p)) for p in v]

    @field_validator("agent_subnet", "agent_subnet_pool", "kube_agent_egress")
    @classmethod
    def _valid_subnets(cls, v: object) -> object:
        import ipaddress

        for item in v if isinstance(v, list) else [v] if v else []:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not a subnet (e.g. 172.29.0.0/16)") from None
        return v

    @field_validator("agent_user")
    @classmethod
    def _non_root_user(cls, v: str) -> str:
        if is_root_user(v):
            raise ValueError("ORCH_AGENT_USER must be a non-root user (e.g. 10001:10001); loosen one agent "
                             "with ORCH_AGENT_SECURITY_EXCEPTIONS instead")
        return v

    @property
    def image_allowlist(self) -> list[str]:
        """The allowlist in force: the configured one, or the default image's repository alone."""
        return self.agent_image_allowlist or [split_image(self.agent_image)[0]]

    @model_validator(mode="after")
    def _memory_in_range(self) -> "Settings":
        if memory_bytes(self.agent_memory) > memory_bytes(self.agent_memory_max):
            raise ValueError("ORCH_AGENT_MEMORY must not exceed ORCH_AGENT_MEMORY_MAX")
        return self

    @model_validator(mode="after")
    def _supabase_complete(self) -> "Settings":
        if self.tenant_store == "supabase":
            missing = [n for n, v in (("ORCH_SUPABASE_URL", self.supabase_url), ("ORCH_SUPABASE_SERVICE_KEY", self.supabase_service_key),
                                      ("ORCH_MASTER_KEYS", self.master_keys), ("ORCH_MASTER_KEY_ID", self.master_key_id)) if not v]
            if missing:
                raise ValueError(f"ORCH_TENANT_STORE=supabase needs {', '.join(missing)}")
        if self.master_key_id is not None and self.master_key_id not in self.master_keys:
            raise ValueError("ORCH_MASTER_KEY_ID must name one of the ids in ORCH_MASTER_KEYS")
        return self

    @model_validator(mode="after")
    def _timeouts_cover_grace(self) -> "Settings":
        # LiveKit must not close a room before our grace period ends (design.md, facts).
        if self.room_empty_timeout_s < self.grace_period_s:
            raise ValueError("ORCH_ROOM_EMPTY_TIMEOUT_S must be at least ORCH_GRACE_PERIOD_S")
        return self

    @field_validator("dispatch_room_patterns")
    @classmethod
    def _patterns_compile(cls, v: list[str]) -> list[str]:
        for pattern in v:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"ORCH_DISPATCH_ROOM_PATTERNS: {pattern!r} is not a regular expression ({exc})") from None
        return v

    @classmethod
    def load(cls) -> "Settings":
        """Settings from the environment; any problem raises SettingsProblem with one line and no values.
        An `ORCH_*` variable that is no setting (a typo) is named in a warning instead of being silently ignored."""
        for line in unknown_variables(os.environ, settings=(f"ORCH_{n.upper()}" for n in cls.model_fields)):
            log.warning(line)
        try:
            return cls()
        except Exception as exc:  # ValidationError, or pydantic-settings' SettingsError for unparsable JSON
            raise SettingsProblem(settings_error_line(exc)) from None

    @property
    def room_departure_timeout_s(self) -> int:
        """LiveKit's departure_timeout: at least the grace period, so LiveKit never kicks the agent first."""
        return max(int(self.grace_period_s) + 1, 20)


__all__ = ["PLACEHOLDER_SECRETS", "AgentSecurityException", "Settings", "SettingsProblem", "is_placeholder", "settings_error_line"]
