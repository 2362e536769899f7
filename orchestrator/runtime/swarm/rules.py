"""Pure Swarm rules: service names, the service spec built from a ContainerSpec, task states → ours.

No I/O and no SDK here (the raw Engine API dicts are built by hand), so every rule is a table test.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from orchestrator.core.models import ContainerStatus, Health
from orchestrator.rules.naming import Label

SERVICE_NAME_MAX = 63
SERVICE_HASH_LEN = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")

# Task states before a container runs (swarmkit's order); "remove" is a task whose service is going away.
PRE_RUNNING = frozenset({"new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting"})

# What our restart rules mean in swarm terms. A service's own default is `any`, which would restart an
# agent that left cleanly (its room ended): "on-failure" stays our default, "no" never restarts.
RESTART_CONDITIONS = {"no": "none", "on-failure": "on-failure", "unless-stopped": "any", "always": "any"}


def service_name(logical: str) -> str:
    """A swarm service name for a logical container name: no `.`, at most 63 characters, always ending in
    a short hash of the exact logical name (mapping characters alone would let two names collide)."""
    digest = hashlib.sha256(logical.encode()).hexdigest()[:SERVICE_HASH_LEN]
    head = _UNSAFE.sub("-", logical)[: SERVICE_NAME_MAX - SERVICE_HASH_LEN - 1].rstrip("_-")
    return f"{head or 'agent'}-{digest}"


def parse_bytes(value: str) -> int:
    """Docker's memory notation (512m, 1g, 65536, 64k) to bytes."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([bkmg]?)b?\s*", value.lower())
    if not m:
        raise ValueError(f"not a memory size: {value!r} (use e.g. 512m or 1g)")
    return int(float(m.group(1)) * {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}[m.group(2)])


def constraints_for(labels: Mapping[str, str], placement: Mapping[str, Iterable[str]]) -> list[str]:
    """Placement constraints of one agent: entries for every agent (`*`), its client, and `client/slug`."""
    client, slug = labels.get(Label.CLIENT_ID, ""), labels.get(Label.AGENT_SLUG, "")
    found: list[str] = []
    for key in ("*", client, f"{client}/{slug}"):
        for c in placement.get(key, ()):
            if c not in found:
                found.append(c)
    return found


SECRETS_DIR = "/run/secrets"
SECRET_NAME_MAX = 64
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Engine 20.10 (API 1.41) has no NoNewPrivileges in a service's ContainerSpec (API 1.46 added it): with every
# capability dropped from the bounding set, a setuid binary still gains none, which is what it would prevent.
LOG_DRIVER = "json-file"


def secret_name(service: str, key: str, suffix: str) -> str:
    """A Docker secret per service and key, fresh each time (suffix: random hex): made before, removed with the
    service. At most 64 characters of [A-Za-z0-9-_.], starting and ending alphanumeric (the engine's rule)."""
    tail = f"{key.lower().replace('_', '-')}-{suffix}"
    head = _UNSAFE.sub("-", service)[: SECRET_NAME_MAX - len(tail) - 1].rstrip("-_.")
    return f"{head or 'agent'}-{tail}"


def secret_prelude(keys: Iterable[str]) -> str:
    """The shell line that turns the service's secret files into the agent's environment, then execs its command.

    The values exist only in the running agent's process: never in the service spec, the raft log's task
    specs or `docker inspect` of the container (which show the file paths only)."""
    parts = []
    for key in sorted(keys):
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"not an environment variable name: {key!r}")
        parts.append(f'{key}="$(cat {SECRETS_DIR}/{key})" && export {key}')
    return " && ".join([*parts, 'exec "$@"'])


def _uid_gid(user: str | None) -> tuple[str, str]:
    uid, _, gid = (user or "0").partition(":")
    return (uid if uid.isdigit() else "0"), (gid if gid.isdigit() else uid if uid.isdigit() else "0")


def service_spec(
    *, name: str, image: str, labels: Mapping[str, str], env: Mapping[str, str], memory: str, cpus: float,
    pids: int, network: str, restart_policy: str, restart_max: int, restart_delay_s: float, stop_timeout_s: int,
    constraints: list[str], spread: str | None, user: str | None = None, read_only_root: bool = True,
    tmpfs: Mapping[str, str] | None = None, cap_add: Iterable[str] = (), log_max_size: str = "10m", log_max_files: int = 3,
    secrets: Mapping[str, tuple[str, str]] | None = None, command: list[str] | None = None,
) -> dict[str, Any]:
    """The Engine API body of `POST /services/create` for one agent (replicas 1), with the restricted profile.

    Reservations equal limits, so the scheduler only places an agent where its memory and CPU are free
    ("no suitable node (insufficient resources ...)" otherwise). The pids limit goes into the raw body:
    the docker SDK's Resources type has no field for it, the Engine API has since 1.41.

    `secrets` maps an env key to (secret id, secret name): that key leaves `Env`, its value arrives as a file
    under /run/secrets (owned by the agent's user, mode 0400) and `command` (the image's entrypoint + cmd)
    is run behind `secret_prelude`, which exports it. Without `command` a secret cannot be handed over.
    """
    nano_cpus, mem = int(cpus * 1e9), parse_bytes(memory)
    condition = RESTART_CONDITIONS[restart_policy]
    restart: dict[str, Any] = {"Condition": condition, "Delay": int(restart_delay_s * 1e9)}
    if condition == "on-failure":
        restart["MaxAttempts"] = restart_max
    placement: dict[str, Any] = {}
    if constraints:
        placement["Constraints"] = list(constraints)
    if spread:
        placement["Preferences"] = [{"Spread": {"SpreadDescriptor": spread}}]
    secrets = dict(secrets or {})
    container: dict[str, Any] = {
        "Image": image,
        "Labels": dict(labels),
        "Env": [f"{k}={v}" for k, v in env.items() if k not in secrets],
        "Init": True,
        "StopGracePeriod": int(stop_timeout_s * 1e9),
        # The restricted profile, as on Docker: no capabilities, nothing writable but the tmpfs, a non-root user.
        "ReadOnly": read_only_root,
        "CapabilityDrop": ["ALL"],
        "Mounts": [
            {"Type": "tmpfs", "Target": target, "ReadOnly": False, "TmpfsOptions": _tmpfs_options(options)}
            for target, options in (tmpfs or {}).items()
        ],
    }
    if cap_add:
        container["CapabilityAdd"] = list(cap_add)
    if user:
        container["User"] = user
    if secrets:
        if not command:
            raise ValueError("secrets need the image's command to run behind the prelude that exports them")
        uid, gid = _uid_gid(user)
        container["Secrets"] = [
            {"SecretID": sid, "SecretName": sname, "File": {"Name": key, "UID": uid, "GID": gid, "Mode": 0o400}}
            for key, (sid, sname) in sorted(secrets.items())
        ]
        container["Command"] = ["/bin/sh", "-c", secret_prelude(secrets), "agent", *command]
    task: dict[str, Any] = {
        "ContainerSpec": container,
        "Resources": {
            "Limits": {"NanoCPUs": nano_cpus, "MemoryBytes": mem, "Pids": pids},
            "Reservations": {"NanoCPUs": nano_cpus, "MemoryBytes": mem},
        },
        "RestartPolicy": restart,
        "Placement": placement,
        "LogDriver": {"Name": LOG_DRIVER, "Options": {"max-size": log_max_size, "max-file": str(log_max_files)}},
    }
    # "host" means the node's own network namespace (the operator's explicit opt-out); by default the runtime
    # makes an overlay network per scope (SwarmRuntime.ensure_network).
    if network and network not in ("bridge", "default"):
        task["Networks"] = [{"Target": network}]
    return {
        "Name": name,
        "Labels": dict(labels),
        "TaskTemplate": task,
        "Mode": {"Replicated": {"Replicas": 1}},
    }


def _tmpfs_options(options: str) -> dict[str, Any]:
    """Docker's `--tmpfs` option string (`size=64m,mode=1777`) as a mount's TmpfsOptions."""
    found: dict[str, Any] = {}
    for part in filter(None, (p.strip() for p in options.split(","))):
        key, _, value = part.partition("=")
        if key == "size":
            found["SizeBytes"] = parse_bytes(value)
        elif key == "mode":
            found["Mode"] = int(value, 8)
    return found


def _created(task: Mapping[str, Any]) -> str:
    return str(task.get("CreatedAt") or "")


def current_task(tasks: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The task that speaks for a one-replica service: the newest one (a replacement supersedes the old)."""
    return max(tasks, key=lambda t: (_created(t), (t.get("Version") or {}).get("Index", 0)), default=None)


class TaskView(NamedTuple):
    status: ContainerStatus
    exit_code: int | None = None
    reason: str | None = None
    health: Health = Health.none


def task_status(task: Mapping[str, Any] | None, *, earlier_tasks: int = 0, replicas: int = 1) -> TaskView:
    """Our status, exit code, reason and health for a service from its current task.

    A first task not yet running is `created` (the trigger waits for it); a replacement not yet running
    (after a crash, a lost or drained node) is `restarting`: a wait state, so neither the trigger nor the
    reconciler's "created but never started" rule tears down an agent the swarm is already moving.
    A task `starting` with its container made is Docker's "running (health: starting)": swarm holds an image
    with a HEALTHCHECK in `starting` until the first check passes (3 s and more for the agent image), while
    the agent is already up and joining its room.
    """
    if task is None:
        return TaskView(ContainerStatus.exited, 0, "scaled to 0") if replicas == 0 else TaskView(ContainerStatus.created)
    status = task.get("Status") or {}
    state, desired = status.get("State", "new"), task.get("DesiredState", "running")
    reason = status.get("Err") or (status.get("Message") if state != "running" else None) or None
    container = status.get("ContainerStatus") or {}
    exit_code = container.get("ExitCode")
    stopping = desired in ("shutdown", "remove")
    if state == "running":
        return TaskView(ContainerStatus.removing, reason="stopping") if stopping else TaskView(ContainerStatus.running)
    if state == "starting" and container.get("ContainerID") and not stopping:
        return TaskView(ContainerStatus.running, health=Health.starting)
    if state in PRE_RUNNING:
        if stopping:
            return TaskView(ContainerStatus.removing, reason=reason)
        return TaskView(ContainerStatus.restarting if earlier_tasks else ContainerStatus.created, reason=reason)
    if state == "complete":
        return TaskView(ContainerStatus.exited, 0, reason)
    if state == "failed":
        return TaskView(ContainerStatus.exited, exit_code if exit_code not in (None, 0) else 1, reason)
    if state == "shutdown":
        return TaskView(ContainerStatus.exited, exit_code or 0, reason)
    if state == "remove":
        return TaskView(ContainerStatus.removing, reason=reason)
    # rejected (could not be started: missing image, bad mount) and orphaned (node lost for good).
    return TaskView(ContainerStatus.dead, reason=reason or state)


def unschedulable(reason: str | None) -> str | None:
    """'resources' or 'constraints' when the scheduler says no node can take the task, else None.

    'unavailable' when some node is down, draining or not yet back ("N nodes not available for new tasks"): the
    scheduler checks readiness first, so such a node may fit once it returns (a partition healing, a restart),
    and the task is worth waiting for, not failed at once.
    """
    if not reason or "no suitable node" not in reason:
        return None
    if "not available for new tasks" in reason:
        return "unavailable"
    return "resources" if "insufficient resources" in reason else "constraints"
