"""Pure rules for the agents' namespace: the NetworkPolicy that isolates agent Pods (no I/O, table-tested).

Agents accept no connection (no ingress rule) and may open only: DNS to the cluster's resolver, the outside
world's public addresses (LiveKit Cloud, an LLM API) when allowed, LiveKit's own ports on each LiveKit address
the agents' URLs name (its signal port from the URL, its RTC/TURN ports from ORCH_AGENT_HOST_PORTS: nothing
else that shares that address, such as a node's kubelet or a host's database), and the operator's own
destinations (e.g. an in-cluster LiveKit's Pod range, any port: the operator chose them). Every private,
link-local (cloud metadata) and shared address range is left out of "public", so the orchestrator's Service,
other Pods and the nodes are out of reach by default.

No ingress rule, media included: the agent's ICE checks to LiveKit's announced address and port open the flow, and
LiveKit's checks and media come back on it as replies, which a stateful enforcer admits (a check of LiveKit's that
arrives before the agent's is refused and retried).
That needs LiveKit to send from the address it announces: a LiveKit announcing one address (rtc.node_ip) on a
host with several interfaces must keep its media to it (rtc.ips.includes), or its checks leave from another
address, are refused, and the agent is listed but never heard (README "NetworkPolicy enforced on the real node").
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from orchestrator.rules.isolation import HostPort, port_of_url
from orchestrator.rules.naming import Label

POLICY_NAME = "agent-orchestrator-agents"
# Not "the internet": RFC 1918, loopback, link-local (169.254.169.254 is the cloud metadata service),
# carrier-grade NAT (often a cluster's Pod or Service range) and "this network".
NOT_PUBLIC_V4 = ("0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12", "192.168.0.0/16")
DNS_PORTS = [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def cidr(value: str) -> str:
    """A destination as a CIDR (`10.1.2.3` → `10.1.2.3/32`); raises ValueError for anything else."""
    return str(ipaddress.ip_network(value.strip(), strict=False))


def livekit_destinations(urls: Iterable[str]) -> list[str]:
    """The /32 (or /128) of every LiveKit URL whose host is an IP address: reachable even when private.
    A host name is left to the `public` rule or to ORCH_KUBE_AGENT_EGRESS (a policy holds no names)."""
    found: list[str] = []
    for url in urls:
        host = urlsplit(url).hostname or ""
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            continue
        if not address.is_loopback and (net := str(ipaddress.ip_network(address))) not in found:
            found.append(net)
    return found


def policy_port(port: HostPort) -> dict[str, Any]:
    """One NetworkPolicy port (a range as port..endPort, stable since Kubernetes 1.25)."""
    rule: dict[str, Any] = {"protocol": port.proto.upper(), "port": port.first}
    if port.last != port.first:
        rule["endPort"] = port.last
    return rule


def livekit_egress(urls: Iterable[str], *, rtc_ports: Iterable[HostPort]) -> list[dict[str, Any]]:
    """One egress rule per LiveKit address (livekit_destinations): its signal port(s) from the URLs that name it,
    plus LiveKit's RTC/TURN ports (`rtc_ports`), and nothing else of that address."""
    rtc = [policy_port(p) for p in rtc_ports]
    signal: dict[str, list[dict[str, Any]]] = {}
    for url in urls:
        for net in livekit_destinations([url]):
            port = port_of_url(url)
            if port is not None and (rule := {"protocol": "TCP", "port": port}) not in signal.setdefault(net, []):
                signal[net].append(rule)
    return [{"to": [{"ipBlock": {"cidr": net}}], "ports": [*ports, *(p for p in rtc if p not in ports)]}
            for net, ports in signal.items()]


def agent_network_policy(
    *, namespace: str, scope: str, public: bool, destinations: Iterable[str] = (), livekit_urls: Iterable[str] = (),
    rtc_ports: Iterable[HostPort] = (), dns_namespace: str = "kube-system",
) -> dict[str, Any]:
    """The NetworkPolicy for every Pod of the agents' namespace (podSelector {}: only agents live there)."""
    egress: list[dict[str, Any]] = [{
        "to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": dns_namespace}},
                "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
        "ports": DNS_PORTS,
    }]
    if public:
        egress.append({"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": list(NOT_PUBLIC_V4)}}]})
    egress += livekit_egress(livekit_urls, rtc_ports=rtc_ports)
    blocks = list(dict.fromkeys(cidr(d) for d in destinations))
    if blocks:
        egress.append({"to": [{"ipBlock": {"cidr": b}} for b in blocks]})
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": POLICY_NAME, "namespace": namespace,
                     "labels": {Label.MANAGED: "true", Label.SCOPE: scope}},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress", "Egress"], "ingress": [], "egress": egress},
    }


def _normal(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if v not in ([], None)}


def same_policy(stored: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether a stored policy spec already says what we want (the API server omits empty rule lists)."""
    return stored is not None and _normal(stored) == _normal(wanted)
