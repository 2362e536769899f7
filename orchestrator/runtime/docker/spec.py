"""Pure Docker rules: a ContainerSpec as the Engine API's create arguments, list/inspect rows as ContainerInfo,
network attributes as AgentNetwork, and the bridge options of the agents' networks.

No I/O and no SDK here (plain dicts in, plain dicts out), so every rule is a table test; the runtime passes the
host-config dict to the SDK's `create_host_config`, which checks the values against the engine's API version.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timezone
from typing import Any

from orchestrator.core.models import ContainerInfo, ContainerStatus, Health
from orchestrator.rules.agent_exits import exit_reason
from orchestrator.rules.isolation import AGENTS_NETWORK_LABEL, AgentNetwork, gateway_of
from orchestrator.rules.launch_spec import ContainerSpec

_HEALTH_IN_STATUS = re.compile(r"\((healthy|unhealthy|health: starting)\)")
_EXIT_IN_STATUS = re.compile(r"^Exited \((-?\d+)\)")
_RESTARTING_IN_STATUS = re.compile(r"^Restarting \((-?\d+)\)")
BRIDGE_NAME_OPTION = "com.docker.network.bridge.name"
# Agents on one network cannot reach each other (only the gateway and the outside): one tenant's agent never
# talks to another's, even on a shared deployment network.
ICC_OPTION = "com.docker.network.bridge.enable_icc"


def bridge_name(network: str) -> str:
    """A stable host interface name for a network we make (≤ 15 characters, Linux's limit), so operators'
    firewall rules (and the host filter's chain) can name it before the network exists."""
    return "oa-" + hashlib.sha256(network.encode()).hexdigest()[:10]


def bridge_options(network: str) -> dict[str, str]:
    """The options of an agents' bridge network: no inter-container traffic, a predictable interface name."""
    return {ICC_OPTION: "false", BRIDGE_NAME_OPTION: bridge_name(network)}


def host_config_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The keyword arguments of docker-py's `create_host_config` for one agent (the hardened profile)."""
    restart: dict[str, Any] = {"Name": spec.restart_policy}
    if spec.restart_policy == "on-failure":
        restart["MaximumRetryCount"] = spec.restart_max
    return {
        "mem_limit": spec.memory,
        "nano_cpus": int(spec.cpus * 1e9),
        "pids_limit": spec.pids,
        "restart_policy": restart,
        "network_mode": spec.network,
        "init": True,
        "log_config": {"type": "json-file", "config": {"max-size": spec.log_max_size, "max-file": str(spec.log_max_files)}},
        # Hardening (ContainerSpec's defaults): no capabilities at all unless an operator added some, no
        # setuid/file-capability gains, nothing writable but the tmpfs, no host paths, no socket.
        "cap_drop": ["ALL"],
        "cap_add": list(spec.cap_add) or None,
        "security_opt": ["no-new-privileges:true"] if spec.no_new_privileges else None,
        "read_only": spec.read_only_root,
        "tmpfs": dict(spec.tmpfs) or None,
        "runtime": spec.runtime,
    }


def create_kwargs(spec: ContainerSpec) -> dict[str, Any]:
    """The keyword arguments of docker-py's `create_container`, less the host config."""
    return {
        "image": spec.image, "name": spec.name, "labels": spec.labels, "environment": spec.env,
        "user": spec.user or "", "stop_timeout": spec.stop_timeout_s, "detach": True,
        "stdin_open": spec.stdin,  # a warm member's handover channel (runtime.docker.pool)
    }


def parse_time(value: Any) -> datetime | None:
    """Docker's times: epoch seconds in list rows, RFC 3339 with nanoseconds in inspect answers."""
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value).astimezone()
    if isinstance(value, str) and value:
        try:
            parsed = datetime.fromisoformat(value[:26].rstrip("Z") if "." in value else value.rstrip("Z"))
        except ValueError:
            return None
        return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)  # Docker's `Z`: UTC, comparable to now
    return None


def info_from_list(row: dict[str, Any]) -> ContainerInfo:
    """A sparse list row (one API call for all containers) to ContainerInfo; health and exit code are in Status."""
    status_text = row.get("Status", "")
    match = _HEALTH_IN_STATUS.search(status_text)
    health = Health.none
    if match:
        health = Health.starting if "starting" in match.group(1) else Health(match.group(1))
    exit_code = int(exit_match.group(1)) if (exit_match := _EXIT_IN_STATUS.match(status_text)) else None
    restarting = _RESTARTING_IN_STATUS.match(status_text)  # Docker's back-off between restarts names the last exit
    return ContainerInfo(
        id=row["Id"],
        name=row["Names"][0].lstrip("/"),
        status=ContainerStatus(row.get("State", "created")),
        health=health,
        labels=row.get("Labels") or {},
        created_at=parse_time(row.get("Created")),
        exit_code=exit_code,
        reason=exit_reason(int(restarting.group(1)), then="restarting") if restarting else exit_reason(exit_code),
    )


def info_from_inspect(attrs: dict[str, Any]) -> ContainerInfo:
    state = attrs.get("State", {})
    health = (state.get("Health") or {}).get("Status", "none")
    exit_code = state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None
    restarting = state.get("Status") == "restarting"
    return ContainerInfo(
        id=attrs["Id"],
        name=attrs["Name"].lstrip("/"),
        status=ContainerStatus(state.get("Status", "created")),
        health=Health(health) if health in Health._value2member_map_ else Health.none,
        labels=attrs.get("Config", {}).get("Labels") or {},
        created_at=parse_time(attrs.get("Created")),
        exit_code=exit_code,
        reason=exit_reason(state.get("ExitCode"), then="restarting") if restarting else exit_reason(exit_code),
    )


def network_info(attrs: dict[str, Any]) -> AgentNetwork:
    """An inspected network as the agents see it; `managed` when it carries the agents' label (ours to filter)."""
    configs = (attrs.get("IPAM") or {}).get("Config") or [{}]
    subnet = configs[0].get("Subnet")
    gateway = configs[0].get("Gateway") or (gateway_of(subnet) if subnet else None)
    bridge = (attrs.get("Options") or {}).get(BRIDGE_NAME_OPTION) or f"br-{attrs['Id'][:12]}"
    managed = (attrs.get("Labels") or {}).get(AGENTS_NETWORK_LABEL) == "agents" and attrs.get("Driver", "bridge") == "bridge"
    return AgentNetwork(name=attrs["Name"], subnet=subnet, gateway=gateway, bridge=bridge, managed=managed)


def last_exit(info: ContainerInfo, attrs_exit: int | None = None) -> int | None:
    """The non-zero exit code an observation shows (exited, or restarting in Docker's back-off), if any."""
    if info.exit_code:
        return info.exit_code
    if info.status is ContainerStatus.restarting and info.reason and (m := re.match(r"exit (-?\d+)", info.reason)):
        return int(m.group(1))
    return attrs_exit or None


def with_last_exit(info: ContainerInfo, code: int | None) -> ContainerInfo:
    """A running container that the engine restarted after a failure keeps that failure as its reason: Docker resets
    the exit code on restart, so an agent crash-looping on a LiveKit it cannot reach would otherwise look 'up'."""
    if info.reason or not code or info.status not in (ContainerStatus.running, ContainerStatus.created):
        return info
    return info.model_copy(update={"reason": exit_reason(code, then="restarted")})
