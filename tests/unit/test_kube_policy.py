"""Table tests of the agents' NetworkPolicy and of the Pod's runtime class."""

from __future__ import annotations

import pytest

from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.kubernetes.objects import pod_manifest
from orchestrator.runtime.kubernetes.policy import NOT_PUBLIC_V4, agent_network_policy, cidr, livekit_destinations, same_policy


def test_no_ingress_dns_and_public_egress_by_default() -> None:
    p = agent_network_policy(namespace="agents-s", scope="s", public=True)
    assert p["metadata"]["namespace"] == "agents-s" and p["spec"]["podSelector"] == {}
    assert p["spec"]["policyTypes"] == ["Ingress", "Egress"] and p["spec"]["ingress"] == []
    dns, public = p["spec"]["egress"]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert dns["to"][0]["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
    block = public["to"][0]["ipBlock"]
    assert block["cidr"] == "0.0.0.0/0" and "169.254.0.0/16" in block["except"] and "10.0.0.0/8" in block["except"]


@pytest.mark.parametrize(("public", "destinations", "rules"), [
    (False, [], 1),  # DNS only: nothing else reachable
    (False, ["10.96.5.5", "10.244.0.0/16"], 2),
    (True, ["10.244.0.0/16", "10.244.0.0/16"], 3),  # duplicates collapse
])
def test_egress_rules(public: bool, destinations: list[str], rules: int) -> None:
    egress = agent_network_policy(namespace="n", scope="s", public=public, destinations=destinations)["spec"]["egress"]
    assert len(egress) == rules
    if destinations:
        assert egress[-1]["to"][0]["ipBlock"]["cidr"] == cidr(destinations[0])


def test_private_ranges_are_not_public() -> None:
    assert {"10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "127.0.0.0/8", "169.254.0.0/16", "100.64.0.0/10"} <= set(NOT_PUBLIC_V4)


@pytest.mark.parametrize(("urls", "expected"), [
    (["ws://10.1.2.3:7880"], ["10.1.2.3/32"]),
    (["wss://lk.example.com"], []),
    (["ws://127.0.0.1:7880", ""], []),
    (["ws://10.1.2.3:7880", "wss://10.1.2.3"], ["10.1.2.3/32"]),
])
def test_livekit_addresses_become_destinations(urls: list[str], expected: list[str]) -> None:
    assert livekit_destinations(urls) == expected


def test_a_bad_destination_is_refused() -> None:
    with pytest.raises(ValueError):
        agent_network_policy(namespace="n", scope="s", public=False, destinations=["lk.example.com"])


def _spec(**over: object) -> ContainerSpec:
    base: dict = dict(name="agent_a_b_c", image="i", labels={}, env={}, memory="64m", cpus=0.1, pids=64, network="host",
                      restart_policy="on-failure", restart_max=3, stop_timeout_s=2)
    return ContainerSpec(**{**base, **over})


@pytest.mark.parametrize(("runtime", "expected"), [(None, None), ("gvisor", "gvisor")])
def test_agent_runtime_is_the_pods_runtime_class(runtime: str | None, expected: str | None) -> None:
    assert pod_manifest(_spec(runtime=runtime), namespace="n", secret="s")["spec"].get("runtimeClassName") == expected


@pytest.mark.parametrize(("stored", "same"), [
    ({"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "egress": [{"ports": []}]}, False),
    (None, False),
])
def test_same_policy(stored: dict | None, same: bool) -> None:
    wanted = agent_network_policy(namespace="n", scope="s", public=False)["spec"]
    assert same_policy(stored, wanted) is same
    stored_as_the_server_keeps_it = {k: v for k, v in wanted.items() if k != "ingress"}  # empty lists are omitted
    assert same_policy(stored_as_the_server_keeps_it, wanted)
