"""Table tests of the agents' NetworkPolicy and of the Pod's runtime class."""

from __future__ import annotations

import pytest

from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.kubernetes.objects import pod_manifest
from orchestrator.rules.isolation import DEFAULT_HOST_PORTS, parse_host_port
from orchestrator.runtime.kubernetes.policy import (
    NOT_PUBLIC_V4,
    agent_network_policy,
    cidr,
    livekit_destinations,
    livekit_egress,
    same_policy,
)
from orchestrator.settings import Settings


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


RTC = [parse_host_port(p) for p in DEFAULT_HOST_PORTS]  # 7880/tcp, 7881/tcp, 7882/udp, 50000-60000/udp
RTC_RULES = [{"protocol": "TCP", "port": 7880}, {"protocol": "TCP", "port": 7881}, {"protocol": "UDP", "port": 7882},
             {"protocol": "UDP", "port": 50000, "endPort": 60000}]


@pytest.mark.parametrize(("urls", "rtc", "expected"), [
    # The signal port from the URL, then LiveKit's RTC ports: nothing else of that address.
    (["ws://10.1.2.3:7880"], RTC, [("10.1.2.3/32", RTC_RULES)]),
    # A signal port of its own (a TLS proxy in front) comes first; the RTC ports follow unchanged.
    (["wss://10.1.2.3"], RTC, [("10.1.2.3/32", [{"protocol": "TCP", "port": 443}, *RTC_RULES])]),
    (["ws://10.1.2.3:9000", "ws://10.1.2.3:9001"], [], [("10.1.2.3/32", [{"protocol": "TCP", "port": 9000},
                                                                          {"protocol": "TCP", "port": 9001}])]),
    # Two LiveKit servers: one rule each, each only with its own signal port.
    (["ws://10.1.2.3:7880", "ws://10.9.9.9:8000"], [parse_host_port("3478/udp")], [
        ("10.1.2.3/32", [{"protocol": "TCP", "port": 7880}, {"protocol": "UDP", "port": 3478}]),
        ("10.9.9.9/32", [{"protocol": "TCP", "port": 8000}, {"protocol": "UDP", "port": 3478}])]),
    # Host names (a policy holds no names: the public rule or ORCH_KUBE_AGENT_EGRESS) and loopback: no rule.
    (["wss://lk.example.com", "ws://127.0.0.1:7880", ""], RTC, []),
])
def test_livekit_is_reachable_on_its_own_ports_only(urls: list[str], rtc: list, expected: list[tuple[str, list[dict]]]) -> None:
    rules = livekit_egress(urls, rtc_ports=rtc)
    assert [(r["to"], r["ports"]) for r in rules] == [([{"ipBlock": {"cidr": net}}], ports) for net, ports in expected]
    for rule in rules:
        assert rule["ports"], "a LiveKit rule without ports would allow every port"


def test_the_runtime_policy_scopes_livekit_to_its_ports_and_keeps_operator_destinations_whole() -> None:
    from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime

    settings = Settings(runtime="kubernetes", scope="s", agent_livekit_url="ws://10.78.3.1:7880",
                        agent_host_ports=["7881/tcp", "40000-40100/udp"], kube_agent_egress=["10.244.0.0/16"],
                        kube_agent_egress_public=False)
    egress = KubernetesRuntime.from_settings(settings)._network_policy["spec"]["egress"]  # type: ignore[index]
    dns, livekit, operator = egress
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]
    assert livekit == {"to": [{"ipBlock": {"cidr": "10.78.3.1/32"}}], "ports": [
        {"protocol": "TCP", "port": 7880}, {"protocol": "TCP", "port": 7881}, {"protocol": "UDP", "port": 40000, "endPort": 40100}]}
    assert operator == {"to": [{"ipBlock": {"cidr": "10.244.0.0/16"}}]}  # the operator's own CIDRs: any port
    # The served tenants' LiveKit URLs (runtime.LiveKitEgress, at start) add their addresses, on LiveKit's ports only.
    with_tenants = KubernetesRuntime.from_settings(settings)._policy_for(["ws://10.5.5.5:7890", "wss://lk.example.com"])  # type: ignore[misc]
    assert [r["to"] for r in with_tenants["spec"]["egress"][1:3]] == [[{"ipBlock": {"cidr": "10.78.3.1/32"}}],
                                                                      [{"ipBlock": {"cidr": "10.5.5.5/32"}}]]
    assert with_tenants["spec"]["egress"][2]["ports"][0] == {"protocol": "TCP", "port": 7890}


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
