"""Table tests of the pure Swarm rules: service names, the service spec, task states → ours."""

from __future__ import annotations

import re

import pytest

from orchestrator.core.models import ContainerKey, ContainerStatus, Health
from orchestrator.rules.naming import Label, container_name
from orchestrator.runtime.swarm.rules import (
    constraints_for,
    current_task,
    parse_bytes,
    service_name,
    service_spec,
    task_status,
    unschedulable,
)

SWARM_NAME = re.compile(r"^[a-zA-Z0-9](?:[-_]*[A-Za-z0-9]+)*$")  # swarmkit's rule for service names


@pytest.mark.parametrize("logical", [
    "agent_df91fd06_clarence_coherence_room-1",
    "agent_df91fd06_clarence_coherence_room.with.dots",
    "agent_acme_farah_" + "x" * 80,
    "agent_a_b_c-",
    "agent_a_b_c.",
    "agent_a_b_ü",
])
def test_service_names_are_valid_and_carry_a_hash(logical: str) -> None:
    name = service_name(logical)
    assert len(name) <= 63 and "." not in name and SWARM_NAME.fullmatch(name), name
    assert name == service_name(logical)  # deterministic
    assert re.search(r"-[0-9a-f]{8}$", name)


def test_names_that_map_to_the_same_characters_stay_distinct() -> None:
    keys = [
        ContainerKey(client_id="c", agent_slug="farah", room="a.b"),
        ContainerKey(client_id="c", agent_slug="farah", room="a-b"),
        ContainerKey(client_id="c", agent_slug="farah", room="a_b"),
    ]
    logicals = {container_name(k) for k in keys}
    assert len({service_name(n) for n in logicals}) == len(logicals)


@pytest.mark.parametrize(("text", "expected"), [("512m", 512 << 20), ("1g", 1 << 30), ("64k", 64 << 10), ("1000", 1000), ("1.5g", int(1.5 * (1 << 30)))])
def test_memory_notation(text: str, expected: int) -> None:
    assert parse_bytes(text) == expected


def test_memory_notation_refuses_garbage() -> None:
    with pytest.raises(ValueError):
        parse_bytes("lots")


LABELS = {Label.MANAGED: "true", Label.SCOPE: "s", Label.CLIENT_ID: "acme", Label.AGENT_SLUG: "farah", Label.ROOM: "r"}


def spec(**over: object) -> dict:
    base: dict = dict(
        name="agent_acme_farah_r-12345678", image="img:1", labels=LABELS, env={"LIVEKIT_TOKEN": "tok", "A": "b"},
        memory="512m", cpus=0.5, pids=128, network="host", restart_policy="on-failure", restart_max=3,
        restart_delay_s=2.0, stop_timeout_s=10, constraints=[], spread=None,
    )
    return service_spec(**{**base, **over})


def test_service_spec_carries_labels_resources_and_one_replica() -> None:
    body = spec()
    task = body["TaskTemplate"]
    assert body["Labels"] == LABELS and task["ContainerSpec"]["Labels"] == LABELS
    assert body["Mode"] == {"Replicated": {"Replicas": 1}}
    assert task["Resources"]["Limits"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 512 << 20, "Pids": 128}
    assert task["Resources"]["Reservations"] == {"NanoCPUs": 500_000_000, "MemoryBytes": 512 << 20}
    assert task["ContainerSpec"]["StopGracePeriod"] == 10_000_000_000 and task["ContainerSpec"]["Init"] is True
    assert task["Networks"] == [{"Target": "host"}]
    assert "Constraints" not in task["Placement"] and "Preferences" not in task["Placement"]


def test_no_secret_in_labels() -> None:
    body = spec()
    for labels in (body["Labels"], body["TaskTemplate"]["ContainerSpec"]["Labels"]):
        assert "tok" not in labels.values()
    assert "LIVEKIT_TOKEN=tok" in body["TaskTemplate"]["ContainerSpec"]["Env"]


@pytest.mark.parametrize(("ours", "condition", "max_attempts"), [
    ("on-failure", "on-failure", 3), ("no", "none", None), ("always", "any", None), ("unless-stopped", "any", None),
])
def test_restart_policy_follows_our_rules(ours: str, condition: str, max_attempts: int | None) -> None:
    restart = spec(restart_policy=ours)["TaskTemplate"]["RestartPolicy"]
    assert restart["Condition"] == condition and restart.get("MaxAttempts") == max_attempts
    assert restart["Delay"] == 2_000_000_000


def test_default_restart_condition_is_not_any() -> None:
    from orchestrator.settings import Settings

    restart = spec(restart_policy=Settings().agent_restart_policy)["TaskTemplate"]["RestartPolicy"]
    assert restart["Condition"] != "any"


def test_placement_constraints_and_spread() -> None:
    task = spec(constraints=["node.labels.tenant==acme"], spread="node.labels.zone")["TaskTemplate"]
    assert task["Placement"] == {
        "Constraints": ["node.labels.tenant==acme"],
        "Preferences": [{"Spread": {"SpreadDescriptor": "node.labels.zone"}}],
    }


@pytest.mark.parametrize(("placement", "expected"), [
    ({}, []),
    ({"*": ["node.role==worker"]}, ["node.role==worker"]),
    ({"acme": ["node.labels.tenant==acme"]}, ["node.labels.tenant==acme"]),
    ({"other": ["node.labels.tenant==other"]}, []),
    ({"acme/farah": ["node.labels.gpu==1"], "acme": ["node.labels.tenant==acme"], "*": ["node.labels.tenant==acme"]},
     ["node.labels.tenant==acme", "node.labels.gpu==1"]),
    ({"acme/other": ["node.labels.gpu==1"]}, []),
])
def test_constraints_per_agent_and_client(placement: dict, expected: list[str]) -> None:
    assert constraints_for(LABELS, placement) == expected


def test_bridge_network_means_no_attachment() -> None:
    assert "Networks" not in spec(network="bridge")["TaskTemplate"]


def task(state: str, desired: str = "running", *, err: str | None = None, exit_code: int | None = None,
         created: str = "2026-01-01T00:00:00Z", container: str | None = None) -> dict:
    status: dict = {"State": state}
    if container:
        status["ContainerStatus"] = {"ContainerID": container, "PID": 0, "ExitCode": 0}
    if err:
        status["Err"] = err
    if exit_code is not None:
        status["ContainerStatus"] = {"ExitCode": exit_code}
    return {"Status": status, "DesiredState": desired, "CreatedAt": created, "NodeID": "n1"}


@pytest.mark.parametrize(("t", "earlier", "expected"), [
    (None, 0, (ContainerStatus.created, None, None)),
    (task("running"), 0, (ContainerStatus.running, None, None)),
    (task("running", "shutdown"), 0, (ContainerStatus.removing, None, "stopping")),
    *[(task(s), 0, (ContainerStatus.created, None, None)) for s in ("new", "allocated", "pending", "assigned", "accepted", "preparing", "ready", "starting")],
    # Started, its HEALTHCHECK not yet passed: swarm says "starting", Docker would say running (health: starting).
    (task("starting", container="c0ffee"), 0, (ContainerStatus.running, None, None, Health.starting)),
    (task("starting", "shutdown", container="c0ffee"), 0, (ContainerStatus.removing, None, None)),
    (task("pending", err="no suitable node (insufficient resources on 3 nodes)"), 0,
     (ContainerStatus.created, None, "no suitable node (insufficient resources on 3 nodes)")),
    (task("pending"), 2, (ContainerStatus.restarting, None, None)),
    (task("starting"), 1, (ContainerStatus.restarting, None, None)),
    (task("complete", "shutdown", exit_code=0), 0, (ContainerStatus.exited, 0, None)),
    (task("failed", "shutdown", err="task: non-zero exit (3)", exit_code=3), 0, (ContainerStatus.exited, 3, "task: non-zero exit (3)")),
    (task("failed", "shutdown", err="starting container failed"), 0, (ContainerStatus.exited, 1, "starting container failed")),
    (task("shutdown", "shutdown", exit_code=0), 0, (ContainerStatus.exited, 0, None)),
    (task("rejected", "shutdown", err="No such image: x"), 0, (ContainerStatus.dead, None, "No such image: x")),
    (task("orphaned", "shutdown"), 0, (ContainerStatus.dead, None, "orphaned")),
    (task("remove", "remove"), 0, (ContainerStatus.removing, None, None)),
])
def test_task_state_mapping(t: dict | None, earlier: int, expected: tuple) -> None:
    got = task_status(t, earlier_tasks=earlier)
    assert got[: len(expected)] == expected
    if len(expected) == 3:
        assert got.health is Health.none


def test_a_service_scaled_to_zero_reads_as_exited() -> None:
    assert task_status(None, replicas=0)[:3] == (ContainerStatus.exited, 0, "scaled to 0")


def test_the_newest_task_speaks_for_the_service() -> None:
    old = task("failed", "shutdown", exit_code=1, created="2026-01-01T00:00:00Z")
    new = task("running", created="2026-01-01T00:00:05Z")
    assert current_task([new, old]) is new and current_task([]) is None


@pytest.mark.parametrize(("reason", "expected"), [
    ("no suitable node (insufficient resources on 3 nodes)", "resources"),
    ("no suitable node (scheduling constraints not satisfied on 3 nodes)", "constraints"),
    ("no suitable node (3 nodes not available for new tasks)", "unavailable"),
    ("no suitable node (scheduling constraints not satisfied on 1 node; 2 nodes not available for new tasks)", "unavailable"),
    ("no suitable node (insufficient resources on 2 nodes; 1 node not available for new tasks)", "unavailable"),
    ("pending task scheduling", None),
    (None, None),
])
def test_unschedulable(reason: str | None, expected: str | None) -> None:
    assert unschedulable(reason) == expected
