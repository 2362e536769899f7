"""Table tests for the pure Kubernetes pool-member rules (runtime/kubernetes/members.py)."""

from __future__ import annotations

import pytest

from orchestrator.core.models import ContainerInfo, ContainerStatus
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.kubernetes import members as m
from orchestrator.runtime.kubernetes.objects import pod_manifest, pod_name

MEMBER_LABELS = rules.member_labels(scope="s1", pool="abc", image_id="img", created_at="2026-12-02T00:00:00+00:00")
KEY_LABELS = {Label.MANAGED: "true", Label.SCOPE: "s1", Label.CLIENT_ID: "c1", Label.ROOM: "Support Room #1",
              Label.CREATED_AT: "2026-12-02T01:00:00+00:00"}


def spec_of(**env: str) -> ContainerSpec:
    return ContainerSpec(name="pool_s1_abc_0001", image="img", labels=MEMBER_LABELS, env=env, memory="64m", cpus=0.1,
                         pids=64, network="", restart_policy="no", restart_max=0, stop_timeout_s=2, stdin=True)


def test_member_manifest_has_an_open_stdin_no_secret_and_no_managed_label() -> None:
    pod = m.member_manifest(spec_of(AGENT_WARM="1"), namespace="ns")
    [c] = pod["spec"]["containers"]
    assert (c["stdin"], c["stdinOnce"], c["tty"]) == (True, False, False)
    assert Label.MANAGED not in pod["metadata"]["labels"] and pod["metadata"]["labels"][rules.POOL] == "abc"
    assert all("valueFrom" not in e for e in c["env"]) and pod["spec"]["restartPolicy"] == "Never"


@pytest.mark.parametrize("secret", ["LIVEKIT_TOKEN", "OPENAI_API_KEY"])
def test_member_manifest_refuses_a_secret(secret: str) -> None:
    with pytest.raises(ValueError, match=secret):
        m.member_manifest(spec_of(**{secret: "x"}), namespace="ns")


def test_claim_patch_carries_the_precondition_the_key_and_its_pod_name() -> None:
    patch = m.claim_patch(name="agent_c1_farah_room", labels=KEY_LABELS, resource_version="42")
    meta = patch["metadata"]
    assert meta["resourceVersion"] == "42"
    assert meta["labels"][m.POOL_KEY] == pod_name("agent_c1_farah_room") and meta["labels"][Label.MANAGED] == "true"
    # A room no label can carry stays exact as an annotation, as on a cold Pod; so does the canonical name.
    assert meta["annotations"][Label.ROOM] == "Support Room #1" and Label.ROOM not in meta["labels"]
    assert meta["annotations"][m.CONTAINER_NAME_ANNOTATION] == "agent_c1_farah_room"


def info(labels: dict[str, str], name: str = "pool-s1-abc-0001-x") -> ContainerInfo:
    return ContainerInfo(id="u1", name=name, status=ContainerStatus.running, labels=labels)


CLAIMED = {**MEMBER_LABELS, **KEY_LABELS, m.POOL_KEY: "agent-c1-room-123", m.CONTAINER_NAME_ANNOTATION: "agent_c1_farah_room"}


@pytest.mark.parametrize(("labels", "as_key", "as_member", "record"), [
    (MEMBER_LABELS, "pool-s1-abc-0001-x", "pool-s1-abc-0001-x", False),  # idle: as it is, no record
    (CLAIMED, "agent-c1-room-123", "agent_c1_farah_room", True),  # claimed: its key's Pod name; canonical to the pool
    (KEY_LABELS, "pool-s1-abc-0001-x", "pool-s1-abc-0001-x", False),  # a cold agent: untouched
])
def test_how_readers_name_a_member(labels: dict[str, str], as_key: str, as_member: str, record: bool) -> None:
    assert m.as_key_container(info(labels)).name == as_key
    got, rec = m.as_member(info(labels))
    assert got.name == as_member and (rec is not None) == record
    assert rules.is_canonical(got.name) == record  # so the pool's state machine leaves claimed members to the view


@pytest.mark.parametrize(("meta", "idle"), [
    ({"labels": MEMBER_LABELS}, True),
    ({"labels": CLAIMED}, False),
    ({"labels": {**MEMBER_LABELS, Label.MANAGED: "true"}}, False),
    ({"labels": MEMBER_LABELS, "deletionTimestamp": "2026-12-02T00:00:00Z"}, False),
    ({"labels": KEY_LABELS}, False),
])
def test_is_idle(meta: dict[str, object], idle: bool) -> None:
    assert m.is_idle({"metadata": meta}) is idle


def pod(name: str, uid: str, deleting: bool = False) -> dict[str, object]:
    return {"metadata": {"name": name, "uid": uid, **({"deletionTimestamp": "t"} if deleting else {})}}


@pytest.mark.parametrize(("listed", "rivals"), [
    ([pod("m1", "u1")], []),  # only mine
    ([pod("m1", "u1"), pod("m2", "u2")], ["m2"]),  # another member claimed for the key
    ([pod("m1", "u1"), pod("agent-x", "u3")], ["agent-x"]),  # a cold Pod under the key's name
    ([pod("m1", "u1"), pod("m2", "u2", deleting=True), pod("agent-x", "u3", deleting=True)], []),  # leaving: no rival
    ([pod("agent-x", "u1")], []),  # the cold Pod is mine (a cold start's own check)
])
def test_rivals(listed: list[dict[str, object]], rivals: list[str]) -> None:
    assert m.rivals(mine="u1", pods=listed) == rivals


def test_a_cold_pod_is_listed_by_its_key_as_a_claimed_member_is() -> None:
    """The claimant's one list (key_selector) must find a cold Pod of the key: the cold manifest carries the label."""
    spec = spec_of().model_copy(update={"name": "agent_c_s_room", "labels": {Label.MANAGED: "true"}, "stdin": False})
    labels = pod_manifest(m.keyed(spec), namespace="ns", secret="s")["metadata"]["labels"]
    key, value = m.key_selector(pod_name(spec.name)).split("=")
    assert labels[key] == value
    claimed = m.claim_patch(name=spec.name, labels=spec.labels, resource_version="1")["metadata"]["labels"]
    assert claimed[key] == value
    assert not m.is_claimed(labels)  # a cold agent is no pool member


def test_stdin_frame_is_channel_zero_and_one_line() -> None:
    assert m.stdin_frame(b'{"env":{}}') == b'\x00{"env":{}}\n'
    assert m.stdin_frame(b"x\n") == b"\x00x\n"


def test_only_the_deployments_agent_image_is_trusted_to_wait_warm() -> None:
    """The API server cannot read image labels: an agent with an image of its own must start cold, not be pooled
    into a member that never understands its assignment."""
    import asyncio

    from orchestrator.rules import pool as rules
    from orchestrator.runtime.kubernetes.pool import PooledKubernetesRuntime
    from orchestrator.settings import Settings

    rt = PooledKubernetesRuntime.from_settings(Settings(runtime="kubernetes", agent_image="registry/agent:1.0"))
    ours = asyncio.run(rt.image_id("registry/agent:1.0"))
    theirs = asyncio.run(rt.image_id("registry/other:2"))
    assert ours is not None and ours[1].get(rules.WARM_MODE) == rules.WARM_PROTOCOL
    assert theirs is not None and rules.WARM_MODE not in theirs[1]


@pytest.mark.parametrize(("labels", "deleting", "ours"), [
    ({**MEMBER_LABELS, m.POOL_KEY: pod_name("agent_c1_farah_room")}, False, True),  # our patch applied, answer lost
    ({**MEMBER_LABELS, m.POOL_KEY: pod_name("agent_c1_farah_other")}, False, False),  # another key's claim
    (MEMBER_LABELS, False, False),  # still idle: the 409 came from a status update, claim again
    ({**MEMBER_LABELS, m.POOL_KEY: pod_name("agent_c1_farah_room")}, True, False),  # ours, but being deleted
])
def test_a_retried_claim_knows_its_own_write(labels: dict[str, str], deleting: bool, ours: bool) -> None:
    pod = {"metadata": {"labels": labels, **({"deletionTimestamp": "2026-12-02T00:00:00Z"} if deleting else {})}}
    assert m.claimed_for(pod, "agent_c1_farah_room") is ours
