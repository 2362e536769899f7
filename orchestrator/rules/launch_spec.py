"""The launch spec: what one agent container is started with, from its key, agent, settings and network (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime

from orchestrator.core.models import Agent, Client, ContainerKey, Frozen, Mode
from orchestrator.rules.isolation import AgentNetwork, agent_livekit_url
from orchestrator.rules.naming import container_labels, spec_hash
from orchestrator.settings import Settings


class ContainerSpec(Frozen):
    """Everything needed to start one agent container; runtime-neutral (maps onto a Swarm service or a Pod)."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str]
    memory: str
    cpus: float
    pids: int
    network: str
    restart_policy: str
    restart_max: int
    stop_timeout_s: int
    log_max_size: str = "10m"  # per log file, Docker notation; an engine without such a knob ignores it
    log_max_files: int = 3
    # Hardened by default (an engine maps what it can): no capabilities, no privilege gain, read-only root
    # with a small tmpfs, a non-root user whatever the image says; loosened only by operator settings.
    user: str | None = None
    read_only_root: bool = True
    tmpfs: dict[str, str] = {"/tmp": "size=64m"}
    cap_add: tuple[str, ...] = ()
    no_new_privileges: bool = True
    runtime: str | None = None  # an engine-level sandbox such as gVisor's runsc


def agent_image(agent: Agent, settings: Settings) -> str:
    """The image an agent runs: its own, else the deployment's."""
    return agent.image or settings.agent_image


def launch_spec(
    key: ContainerKey, *, name: str, client: Client, agent: Agent, mode: Mode, network: AgentNetwork,
    settings: Settings, token: str, created_at: datetime, extra_labels: Mapping[str, str] | None = None,
) -> ContainerSpec:
    """The spec of `key`'s container; `token` is the room-scoped agent token it joins with."""
    s = settings
    image = agent_image(agent, s)
    labels = {**(extra_labels or {}), **container_labels(
        key, agent=agent, mode=mode, scope=s.scope, spec=spec_hash(agent, image=image, mode=mode), created_at=created_at,
    )}
    env = {
        "LIVEKIT_URL": agent_livekit_url(client.livekit.url, network=network, override=s.agent_livekit_url),
        "LIVEKIT_ROOM": key.room,
        # A room-scoped agent token (ours, or the one LiveKit minted for a dispatched job); the
        # tenant's API secret never enters the container.
        "LIVEKIT_TOKEN": token,
        "AGENT_MODE": mode.value,
        "AGENT_CONFIG": json.dumps(agent.public_config()),
        "AGENT_GRACE_SECONDS": str(s.grace_period_s),
    }
    # The client's own LLM key; the operator's key only as the explicit fallback (never both).
    llm_key = client.llm_api_key or s.agent_llm_api_key
    if llm_key is not None:
        env["OPENAI_API_KEY"] = llm_key.get_secret_value()
    res = agent.resources
    # Hardened unless the operator (never the tenant) loosened this one agent.
    loosen = s.agent_security_exceptions.get(f"{key.client_id}/{key.agent_slug}")
    return ContainerSpec(
        name=name, image=image, labels=labels, env=env,
        memory=res.memory or s.agent_memory, cpus=res.cpus or s.agent_cpus, pids=res.pids or s.agent_pids,
        network=network.name, restart_policy=s.agent_restart_policy, restart_max=s.agent_restart_max,
        stop_timeout_s=s.agent_stop_timeout_s, log_max_size=s.agent_log_max_size, log_max_files=s.agent_log_max_files,
        user=(loosen and loosen.user) or s.agent_user,
        read_only_root=not (loosen and loosen.writable_root),
        tmpfs={"/tmp": f"rw,nosuid,nodev,noexec,size={s.agent_tmpfs_size},mode=1777"},
        cap_add=tuple(loosen.cap_add) if loosen else (),
        no_new_privileges=not (loosen and loosen.allow_new_privileges),
        runtime=(loosen and loosen.runtime) or s.agent_runtime,
    )
