"""Pure Pod rules: names, labels vs annotations, the manifest, and Pod → ContainerInfo, as tables."""

from __future__ import annotations

import re

import pytest

from orchestrator.core.models import ContainerKey, ContainerStatus
from orchestrator.rules.naming import Label, container_name
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.kubernetes.objects import (
    fits_label,
    info_from_pod,
    is_pod_name,
    memory_quantity,
    pod_manifest,
    pod_name,
    secret_manifest,
    selector,
    split_labels,
)

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@pytest.mark.parametrize("logical", [
    "agent_df91fd06_clarence_coherence_room-1",
    "agent_acme_farah_Room With Spaces-1a2b3c4d5e",
    "agent_x" + "_y" * 40,
    "agent_a_b_c.d",
])
def test_pod_names_are_dns_labels_and_deterministic(logical: str) -> None:
    name = pod_name(logical)
    assert DNS_LABEL.fullmatch(name) and len(name) <= 63
    assert name == pod_name(logical)
    assert is_pod_name(name) and not is_pod_name(logical)


def test_names_that_differ_only_in_lost_characters_get_different_pods() -> None:
    # `_` vs `-`, case and dots all map to `-`: the hash of the exact name keeps them apart.
    names = {pod_name(n) for n in ("agent_a_b_room", "agent_a_b_Room", "agent_a_b_room.", "agent-a-b-room")}
    assert len(names) == 4
    keys = [ContainerKey(client_id="c", agent_slug=s, room="r") for s in ("clarence-coherence", "clarence-coherence2")]
    assert len({pod_name(container_name(k)) for k in keys}) == 2


@pytest.mark.parametrize(("value", "fits"), [
    ("true", True), ("df91fd06-816f-4273-a903-5a4861277040", True), ("room_1.a", True), ("", True),
    ("Room With Spaces", False), ("2026-11-27T10:00:00+00:00", False), ("x" * 64, False), ("-edge", False), ("é", False),
])
def test_label_value_rules(value: str, fits: bool) -> None:
    assert fits_label(value) is fits


def test_values_that_cannot_be_labels_keep_their_exact_value_in_annotations() -> None:
    labels = {Label.MANAGED: "true", Label.SCOPE: "prod", Label.ROOM: "Room With Spaces", Label.CREATED_AT: "2026-11-27T10:00:00+00:00"}
    fit, ann = split_labels(labels)
    assert fit == {Label.MANAGED: "true", Label.SCOPE: "prod"}
    assert ann == {Label.ROOM: "Room With Spaces", Label.CREATED_AT: "2026-11-27T10:00:00+00:00"}
    pod = {"metadata": {"name": "p", "uid": "u", "labels": fit, "annotations": ann}, "status": {"phase": "Running"}}
    assert {k: v for k, v in info_from_pod(pod).labels.items() if k in labels} == labels
    assert selector("prod") == "agent-orchestrator.managed=true,agent-orchestrator.scope=prod"


@pytest.mark.parametrize(("docker", "kube"), [("512m", "512Mi"), ("1g", "1Gi"), ("64M", "64Mi"), ("1048576", "1048576"), ("2gb", "2Gi")])
def test_memory_in_docker_notation_becomes_a_quantity(docker: str, kube: str) -> None:
    assert memory_quantity(docker) == kube


def _spec(**over: object) -> ContainerSpec:
    base: dict[str, object] = dict(
        name="agent_c_farah_Room 1", image="img:1", labels={Label.MANAGED: "true", Label.SCOPE: "s", Label.ROOM: "Room 1"},
        env={"LIVEKIT_URL": "ws://x", "LIVEKIT_TOKEN": "tok-secret", "OPENAI_API_KEY": "sk-secret"},
        memory="256m", cpus=0.5, pids=64, network="host", restart_policy="on-failure", restart_max=3, stop_timeout_s=7,
    )
    return ContainerSpec(**{**base, **over})  # type: ignore[arg-type]


def test_manifest_is_restricted_limited_and_keeps_secrets_out_of_the_pod() -> None:
    pod = pod_manifest(_spec(), namespace="ns", secret="sec")
    spec, c = pod["spec"], pod["spec"]["containers"][0]
    assert spec["restartPolicy"] == "OnFailure" and spec["terminationGracePeriodSeconds"] == 7
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]},
                                    "readOnlyRootFilesystem": True, "runAsNonRoot": True}
    assert c["resources"]["limits"] == {"cpu": "500m", "memory": "256Mi"} == c["resources"]["requests"]
    assert "tok-secret" not in str(pod) and "sk-secret" not in str(pod)
    env = {e["name"]: e for e in c["env"]}
    assert env["LIVEKIT_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "sec", "key": "LIVEKIT_TOKEN"}
    assert env["LIVEKIT_URL"]["value"] == "ws://x"
    assert pod["metadata"]["annotations"][Label.ROOM] == "Room 1"
    secret = secret_manifest(_spec(), namespace="ns", name="sec", owner_uid="uid-1")
    assert secret is not None and secret["stringData"] == {"LIVEKIT_TOKEN": "tok-secret", "OPENAI_API_KEY": "sk-secret"}
    assert secret["metadata"]["ownerReferences"][0]["uid"] == "uid-1"
    assert "securityContext" not in pod_manifest(_spec(), namespace="ns", secret="sec", restricted=False)["spec"]


@pytest.mark.parametrize(("ours", "theirs"), [("no", "Never"), ("on-failure", "OnFailure"), ("always", "Always"), ("unless-stopped", "Always")])
def test_restart_rules(ours: str, theirs: str) -> None:
    assert pod_manifest(_spec(restart_policy=ours), namespace="ns", secret="sec")["spec"]["restartPolicy"] == theirs


def _pod(phase: str, *, conditions: list[dict] | None = None, state: dict | None = None, deleting: bool = False,
         node: str | None = None, reason: str | None = None) -> dict:
    meta = {"name": "agent-x-1", "uid": "11111111-2222-3333-4444-555555555555", "creationTimestamp": "2026-11-27T10:00:00Z"}
    if deleting:
        meta["deletionTimestamp"] = "2026-11-27T10:01:00Z"
    status: dict = {"phase": phase, "conditions": conditions or []}
    if state is not None:
        status["containerStatuses"] = [{"name": "agent", "state": state}]
    if reason:
        status["reason"] = reason
    return {"metadata": meta, "spec": {"nodeName": node} if node else {}, "status": status}


UNSCHED = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": "0/3 nodes are available: 3 Insufficient cpu."}]


@pytest.mark.parametrize(("pod", "status", "reason", "exit_code"), [
    (_pod("Pending", conditions=UNSCHED), ContainerStatus.created, "Unschedulable: 0/3 nodes are available: 3 Insufficient cpu.", None),
    (_pod("Pending", state={"waiting": {"reason": "ContainerCreating"}}, node="n1"), ContainerStatus.created, "ContainerCreating", None),
    (_pod("Pending", state={"waiting": {"reason": "ImagePullBackOff"}}, node="n1"), ContainerStatus.created, "ImagePullBackOff", None),
    (_pod("Running", state={"running": {}}, node="n1"), ContainerStatus.running, None, None),
    (_pod("Running", state={"waiting": {"reason": "CrashLoopBackOff"}}, node="n1"), ContainerStatus.restarting, "CrashLoopBackOff", None),
    (_pod("Succeeded", state={"terminated": {"exitCode": 0, "reason": "Completed"}}), ContainerStatus.exited, "Completed", 0),
    (_pod("Failed", state={"terminated": {"exitCode": 3, "reason": "Error"}}), ContainerStatus.exited, "Error", 3),
    (_pod("Failed", reason="Evicted"), ContainerStatus.exited, "Evicted", 1),
    (_pod("Unknown", node="n1"), ContainerStatus.dead, "NodeLost", None),
    (_pod("Running", state={"running": {}}, deleting=True), ContainerStatus.removing, "Terminating", None),
])
def test_pod_phases_map_to_container_states(pod: dict, status: ContainerStatus, reason: str | None, exit_code: int | None) -> None:
    info = info_from_pod(pod)
    assert (info.status, info.reason, info.exit_code) == (status, reason, exit_code)
    assert info.id == pod["metadata"]["uid"] and info.name == "agent-x-1"
    assert info.node == pod["spec"].get("nodeName")


def test_pod_manifest_places_agents_only_where_told() -> None:
    plain = pod_manifest(_spec(), namespace="ns", secret="sec")["spec"]
    assert "nodeSelector" not in plain and "tolerations" not in plain  # anywhere the scheduler likes
    taint = {"key": "agent-orchestrator.dev/real-node", "operator": "Equal", "value": "true", "effect": "NoSchedule"}
    placed = pod_manifest(_spec(), namespace="ns", secret="sec", node_selector={"pool": "agents"}, tolerations=[taint])["spec"]
    assert placed["nodeSelector"] == {"pool": "agents"} and placed["tolerations"] == [taint]
