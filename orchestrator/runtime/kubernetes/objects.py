"""Pure rules for agent Pods: names, labels vs annotations, the Pod manifest, and Pod → ContainerInfo.

No I/O and no SDK here (plain dicts in the API's JSON shape), so every rule is tested with tables.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Mapping

from orchestrator.core.models import ContainerInfo, ContainerStatus, Health
from orchestrator.rules.naming import LABEL_PREFIX, Label, short_hash
from orchestrator.runtime import SECRET_ENV_KEYS, ContainerSpec  # secret values go to a Secret, never into the Pod spec

POD_NAME_MAX = 63  # a DNS-1123 label: the Pod's hostname must fit
POD_HASH_LEN = 10
CONTAINER_NAME = "agent"

_LABEL_VALUE = re.compile(r"^(?:[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
_DNS_UNSAFE = re.compile(r"[^a-z0-9-]+")
_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DNS_LABEL = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")

# Our restart rules (Docker's words) in Kubernetes' words. A Pod has no retry cap: the kubelet backs off
# for ever (CrashLoopBackOff) and the reconciler's restart budget decides when to give up.
RESTART_POLICY = {"no": "Never", "on-failure": "OnFailure", "unless-stopped": "Always", "always": "Always"}

# Container waiting reasons that mean "it ran and keeps failing" rather than "it is still being set up".
_RESTARTING_REASONS = frozenset({"CrashLoopBackOff", "RunContainerError"})


def pod_name(logical: str) -> str:
    """The Pod name for a logical container name: DNS-1123-safe, at most 63 chars, collision-free.

    Lowercasing and mapping `_` to `-` lose information (`agent_a` and `agent-a`), so a short hash of
    the exact logical name is always appended.
    """
    readable = _DNS_UNSAFE.sub("-", logical.lower()).strip("-")
    readable = re.sub(r"-{2,}", "-", readable)
    head = readable[: POD_NAME_MAX - POD_HASH_LEN - 1].rstrip("-") or "agent"
    return f"{head}-{short_hash(logical, length=POD_HASH_LEN)}"


def is_pod_uid(value: str) -> bool:
    return bool(_UID.fullmatch(value))


def is_pod_name(value: str) -> bool:
    """Logical names always contain `_` (naming.NAME_PREFIX), which a Pod name never does."""
    return bool(_DNS_LABEL.fullmatch(value))


def fits_label(value: str) -> bool:
    return len(value) <= 63 and bool(_LABEL_VALUE.fullmatch(value))


def split_labels(labels: Mapping[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """(labels, annotations): values that fit Kubernetes' label rules stay labels (selectable);
    the others (rooms with spaces, timestamps, long ids) keep their exact value as annotations."""
    fit = {k: v for k, v in labels.items() if fits_label(v)}
    rest = {k: v for k, v in labels.items() if k not in fit}
    return fit, rest


def our_labels(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Our labels as we wrote them: the selectable ones plus the exact values kept in annotations."""
    labels = dict(metadata.get("labels") or {})
    labels.update({k: v for k, v in (metadata.get("annotations") or {}).items() if k.startswith(LABEL_PREFIX)})
    return labels


def selector(scope: str) -> str:
    """The label selector of one deployment's pods (scope is validated to fit a label value)."""
    return f"{Label.MANAGED}=true,{Label.SCOPE}={scope}"


def memory_quantity(docker_notation: str) -> str:
    """Docker's `512m`/`1g`/`1048576` (binary units) as a Kubernetes quantity (`512Mi`, `1Gi`, bytes)."""
    value = docker_notation.strip().lower().removesuffix("b")
    units = {"k": "Ki", "m": "Mi", "g": "Gi", "t": "Ti"}
    if value and value[-1] in units and value[:-1].isdigit():
        return f"{value[:-1]}{units[value[-1]]}"
    if value.isdigit():
        return value
    raise ValueError(f"memory {docker_notation!r} is not in Docker notation (e.g. 512m, 1g)")


def cpu_quantity(cpus: float) -> str:
    return f"{max(1, round(cpus * 1000))}m"


def restricted_security() -> tuple[dict[str, Any], dict[str, Any]]:
    """(pod, container) security contexts meeting the `restricted` Pod Security Standard."""
    pod = {"runAsNonRoot": True, "runAsUser": 10001, "runAsGroup": 10001, "seccompProfile": {"type": "RuntimeDefault"}}
    container = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    return pod, container


def secret_name(pod: str, suffix: str) -> str:
    """A fresh name per Pod (suffix: random), so creating it never meets a leftover and needs no delete right."""
    return f"{pod}-env-{suffix}"


def pod_manifest(
    spec: ContainerSpec, *, namespace: str, secret: str, restricted: bool = True, service_account: str | None = None,
    node_selector: Mapping[str, str] | None = None, tolerations: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The Pod for one agent. Secret env values are referenced from the Secret `secret`, made right after;
    node_selector/tolerations place agents on the nodes meant for them (e.g. a tainted agent pool).

    `spec.pids` is not here: a Pod has no field for it. Kubernetes limits processes per Pod only on the
    kubelet (`podPidsLimit` in its KubeletConfiguration, for every Pod of the node); the operator sets it there.
    """
    name = pod_name(spec.name)
    labels, annotations = split_labels(spec.labels)
    annotations[LABEL_PREFIX + "container-name"] = spec.name
    env: list[dict[str, Any]] = []
    for key, value in sorted(spec.env.items()):
        if key in SECRET_ENV_KEYS:
            env.append({"name": key, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}})
        else:
            env.append({"name": key, "value": value})
    resources = {"cpu": cpu_quantity(spec.cpus), "memory": memory_quantity(spec.memory)}
    container: dict[str, Any] = {
        "name": CONTAINER_NAME,
        "image": spec.image,
        "imagePullPolicy": "IfNotPresent",
        "env": env,
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
    }
    pod_spec: dict[str, Any] = {
        "restartPolicy": RESTART_POLICY[spec.restart_policy],
        "terminationGracePeriodSeconds": spec.stop_timeout_s,
        "automountServiceAccountToken": False,  # agents never talk to the Kubernetes API
        "enableServiceLinks": False,
        "containers": [container],
        "volumes": [{"name": "tmp", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}}],
    }
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if node_selector:
        pod_spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        pod_spec["tolerations"] = [dict(t) for t in tolerations]
    if spec.runtime:
        # ORCH_AGENT_RUNTIME as a RuntimeClass (e.g. gVisor's): checked to exist at start (KubernetesRuntime.preflight).
        pod_spec["runtimeClassName"] = spec.runtime
    if restricted:
        pod_spec["securityContext"], container["securityContext"] = restricted_security()
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "annotations": annotations},
        "spec": pod_spec,
    }


def secret_manifest(spec: ContainerSpec, *, namespace: str, name: str, owner_uid: str) -> dict[str, Any] | None:
    """The agent's secret env values, owned by its Pod so the garbage collector removes them with it."""
    data = {k: v for k, v in spec.env.items() if k in SECRET_ENV_KEYS}
    if not data:
        return None
    owner = pod_name(spec.name)
    labels, _ = split_labels({k: v for k, v in spec.labels.items() if k in (Label.MANAGED, Label.SCOPE)})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": name, "namespace": namespace, "labels": labels,
            "ownerReferences": [{"apiVersion": "v1", "kind": "Pod", "name": owner, "uid": owner_uid}],
        },
        "type": "Opaque",
        "stringData": data,
    }


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def _condition(pod: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for cond in (pod.get("status") or {}).get("conditions") or []:
        if cond.get("type") == kind:
            return cond
    return None


def pod_state(pod: Mapping[str, Any]) -> tuple[ContainerStatus, Health, str | None, int | None]:
    """(status, health, reason, exit_code) of an agent Pod, in the runtime protocol's Docker-shaped words.

    Pending → created (reason: Unschedulable with the scheduler's message, or the container's waiting
    reason such as ContainerCreating/ImagePullBackOff); Running → running, or restarting while the
    container is in CrashLoopBackOff; Succeeded/Failed → exited with the container's exit code;
    Unknown (node lost) → dead; a deletion timestamp → removing.
    """
    status = pod.get("status") or {}
    phase = status.get("phase") or "Pending"
    cstatuses = status.get("containerStatuses") or []
    main = next((c for c in cstatuses if c.get("name") == CONTAINER_NAME), cstatuses[0] if cstatuses else {})
    state = main.get("state") or {}
    waiting, terminated = state.get("waiting"), state.get("terminated") or (main.get("lastState") or {}).get("terminated")
    exit_code = terminated.get("exitCode") if terminated else None
    ready = _condition(pod, "Ready")
    health = Health.none
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return ContainerStatus.removing, health, "Terminating", exit_code
    if phase == "Pending":
        scheduled = _condition(pod, "PodScheduled")
        if scheduled is not None and scheduled.get("status") == "False":
            why = scheduled.get("reason") or "Unschedulable"
            message = scheduled.get("message")
            return ContainerStatus.created, health, f"{why}: {message}" if message else why, None
        return ContainerStatus.created, health, (waiting or {}).get("reason") or "Pending", None
    if phase == "Running":
        if waiting and waiting.get("reason") in _RESTARTING_REASONS:
            return ContainerStatus.restarting, health, waiting["reason"], exit_code
        if waiting:
            return ContainerStatus.restarting, health, waiting.get("reason"), exit_code
        if ready is not None and ready.get("status") != "True" and main.get("started") is False:
            health = Health.starting
        return ContainerStatus.running, health, None, None
    if phase in ("Succeeded", "Failed"):
        reason = status.get("reason") or (terminated or {}).get("reason") or phase
        if exit_code is None:
            exit_code = 0 if phase == "Succeeded" else 1  # e.g. evicted before the container ever ran
        return ContainerStatus.exited, health, reason, exit_code
    return ContainerStatus.dead, health, status.get("reason") or "NodeLost", exit_code


def info_from_pod(pod: Mapping[str, Any]) -> ContainerInfo:
    metadata = pod.get("metadata") or {}
    status, health, reason, exit_code = pod_state(pod)
    return ContainerInfo(
        id=metadata.get("uid") or metadata.get("name", ""),
        name=metadata.get("name", ""),
        status=status,
        health=health,
        labels=our_labels(metadata),
        created_at=_parse_time(metadata.get("creationTimestamp")),
        exit_code=exit_code,
        node=(pod.get("spec") or {}).get("nodeName") or None,
        reason=reason,
    )
