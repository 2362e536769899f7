"""Pure rules for warm pool members on Kubernetes: the member Pod, the claim patch, and a claimed Pod as its key's.

A Pod's name cannot change, so a claim patches labels instead of renaming: the key's labels (managed, client,
agent, room...), the key's canonical name as the `container-name` annotation, and `pool-key` = the Pod name
a cold start of that key would have had (`pod_name(canonical)`). Readers then report a claimed member under that
name, so everything that looks a key's container up by name or by labels finds it as if it had started cold.
No I/O here (plain dicts in the API's JSON shape), so every rule is tested with tables.
"""

from __future__ import annotations

from typing import Any, Mapping

from orchestrator.core.models import ContainerInfo
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import LABEL_PREFIX, Label
from orchestrator.runtime import SECRET_ENV_KEYS, ContainerSpec
from orchestrator.runtime.kubernetes.objects import CONTAINER_NAME, pod_manifest, pod_name, split_labels

# On a claimed member: the Pod name its key's container is known by (a label: selectable, and a Pod name always
# fits a label value). An idle member has none; two Pods carrying one value are two claims of one key.
POOL_KEY = LABEL_PREFIX + "pool-key"
CONTAINER_NAME_ANNOTATION = LABEL_PREFIX + "container-name"  # the logical name (objects.pod_manifest writes it too)
MERGE_PATCH = "application/merge-patch+json"


def member_manifest(spec: ContainerSpec, *, namespace: str, **placement: Any) -> dict[str, Any]:
    """The Pod of one idle member: the agent's Pod (same hardening, placement and runtime class) with an open
    stdin for the one assignment line. Refuses a spec carrying a secret: a member holds no tenant data."""
    if leaked := sorted(SECRET_ENV_KEYS & spec.env.keys()):
        raise ValueError(f"a pool member must hold no secret; its spec has {', '.join(leaked)}")
    pod = pod_manifest(spec, namespace=namespace, secret="", **placement)
    for container in pod["spec"]["containers"]:
        if container["name"] == CONTAINER_NAME:
            # stdinOnce false: a handover's attach ending must not close the stdin the member still reads
            container.update({"stdin": True, "stdinOnce": False, "tty": False})
    return pod


def member_selector(scope: str) -> str:
    """Every member of one deployment, idle or claimed (no `managed` term: idle members have none)."""
    return f"{Label.SCOPE}={scope},{rules.POOL}"


def key_selector(key_pod: str) -> str:
    """The members claimed for one key (by the Pod name a cold start of the key would have)."""
    return f"{POOL_KEY}={key_pod}"


def claim_patch(*, name: str, labels: Mapping[str, str], resource_version: str) -> dict[str, Any]:
    """A JSON merge patch making an idle member the container of `name`: the key's labels (values that cannot be
    labels kept exactly as annotations, as on a cold Pod), the canonical name, and the member's resourceVersion as
    the precondition: the API server applies it only to the member exactly as it was read (idle), else 409."""
    fit, rest = split_labels(labels)
    fit[POOL_KEY] = pod_name(name)
    rest[CONTAINER_NAME_ANNOTATION] = name
    return {"metadata": {"resourceVersion": resource_version, "labels": fit, "annotations": rest}}


def is_claimed(labels: Mapping[str, str]) -> bool:
    return rules.POOL in labels and POOL_KEY in labels


def claimed_for(pod: Mapping[str, Any], name: str) -> bool:
    """Whether `pod` is a member already claimed as `name`'s container: a claim patch retried after its answer was
    lost (the API server applied it) meets its own write as a 409 and must take it as done, not lose the member."""
    meta = pod.get("metadata") or {}
    return (meta.get("labels") or {}).get(POOL_KEY) == pod_name(name) and not meta.get("deletionTimestamp")


def is_idle(pod: Mapping[str, Any]) -> bool:
    """An unclaimed member that is not being deleted (its state is the caller's to judge)."""
    meta = pod.get("metadata") or {}
    labels = meta.get("labels") or {}
    return rules.POOL in labels and POOL_KEY not in labels and Label.MANAGED not in labels and not meta.get("deletionTimestamp")


def as_key_container(info: ContainerInfo) -> ContainerInfo:
    """What every reader reports: a claimed member under its key's Pod name (an idle member or an agent as it is)."""
    if not is_claimed(info.labels):
        return info
    return info.model_copy(update={"name": info.labels[POOL_KEY]})


def as_member(info: ContainerInfo) -> tuple[ContainerInfo, dict[str, str] | None]:
    """What the pool reads (list_members): an idle member as it is with no record; a claimed one under its
    canonical name (rules.is_canonical) with its key's labels as the record (it is the view's now)."""
    if not is_claimed(info.labels):
        return info, None
    name = info.labels.get(CONTAINER_NAME_ANNOTATION) or info.labels[POOL_KEY]
    return info.model_copy(update={"name": name}), dict(info.labels)


def keyed(spec: ContainerSpec) -> ContainerSpec:
    """A cold agent's spec with the `pool-key` label a claimed member of its key carries (its own Pod name), so a
    claimant finds the cold Pod and the other members of the key in one list (key_selector)."""
    return spec.model_copy(update={"labels": {**spec.labels, POOL_KEY: pod_name(spec.name)}})


def rivals(*, mine: str, pods: list[Mapping[str, Any]]) -> list[str]:
    """Names of the other Pods serving the same key (listed by key_selector): members claimed for it and the Pod a
    cold start made, but `mine` (by uid). Pods being deleted are no rivals (they are leaving)."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("uid") != mine and not meta.get("deletionTimestamp"):
            out.append(str(meta.get("name", "")))
    return out


def stdin_frame(line: bytes) -> bytes:
    """One message of the `v4.channel.k8s.io` attach protocol: channel 0 (stdin), then the bytes."""
    return b"\x00" + (line if line.endswith(b"\n") else line + b"\n")
