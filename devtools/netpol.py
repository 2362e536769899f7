"""The NetworkPolicy enforcer of a real test node: kube-router's firewall controller alone, inside the node's
network namespace, so its iptables chains and ipsets live (and die) with that namespace.

kube-router is built and cached by scripts/build-netpol. It reads pods, namespaces and NetworkPolicies
through the same apiserver relay as the node's kubelet, as its own user (a client certificate from the
cluster's CA, bound to a read-only ClusterRole made here and deleted by `stop_enforcer`).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from devtools.livekit_server import CACHE_BIN

if TYPE_CHECKING:
    from devtools.kube_node import RealNode

KUBE_ROUTER_VERSION = os.environ.get("KUBE_ROUTER_VERSION", "v2.1.0")
PROC = "kube-router"
ROLE = "agent-orchestrator-test:kube-router"
# What kube-router's informers list and watch (it starts them all, whichever controllers run).
READS = ("pods", "namespaces", "nodes", "services", "endpoints")
SERVICE_RANGE = "10.96.0.0/16"  # the test apiserver's --service-cluster-ip-range
# The chain its policy controller hooks into FORWARD/OUTPUT once its first full sync is done.
READY_CHAIN = "KUBE-ROUTER-FORWARD"


def kube_router_binary() -> Path:
    path = Path(os.environ.get("KUBE_ROUTER_BIN_DIR") or CACHE_BIN / f"kube-router-{KUBE_ROUTER_VERSION}") / "kube-router"
    if not path.is_file():
        raise RuntimeError(f"kube-router missing at {path}: run scripts/build-netpol (it builds and caches it)")
    if not any(Path(d, "ipset").is_file() for d in os.environ.get("PATH", "").split(":") + ["/usr/sbin", "/sbin"]):
        raise RuntimeError("ipset not found: run scripts/build-netpol (it installs Debian's ipset)")
    return path


def _rbac(node: "RealNode", user: str) -> None:
    cluster = node.cluster
    role = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": f"{ROLE}-{node.run}"},
        "rules": [
            {"apiGroups": [""], "resources": list(READS), "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["networking.k8s.io"], "resources": ["networkpolicies"], "verbs": ["get", "list", "watch"]},
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["get", "list", "watch"]},
        ],
    }
    binding = {
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding", "metadata": {"name": f"{ROLE}-{node.run}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": f"{ROLE}-{node.run}"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }
    cluster.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", role)
    cluster.api("POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", binding)


def start_enforcer(node: "RealNode", *, timeout_s: float = 60) -> None:
    """Start kube-router's policy controller in `node`'s namespace; returns once its chains are in place."""
    binary = kube_router_binary()
    user = f"kube-router-{node.name}"
    client = node.cluster.ca.issue(f"{node.name}-kube-router", common_name=user, client=True)
    _rbac(node, user)
    kubeconfig = yaml.safe_load((node.base / "kubelet.kubeconfig").read_text())  # the same relay to the apiserver
    kubeconfig["users"] = [{"name": "node", "user": {"client-certificate": str(client.cert), "client-key": str(client.key)}}]
    (node.base / "kube-router.kubeconfig").write_text(yaml.safe_dump(kubeconfig))
    node._nsenter(PROC, [
        str(binary), f"--kubeconfig={node.base / 'kube-router.kubeconfig'}", f"--hostname-override={node.name}",
        "--run-firewall=true", "--run-router=false", "--run-service-proxy=false",
        f"--service-cluster-ip-range={SERVICE_RANGE}", "--metrics-port=0",
        "--health-port=0",  # no health listener: it would answer on every address of the node, pods' gateway included
        "--v=2",
    ])
    node._wait(lambda: in_node(node, "iptables", "-w", "-S", READY_CHAIN).returncode == 0, timeout_s,
               f"kube-router's {READY_CHAIN} chain in node {node.name}")


def stop_enforcer(node: "RealNode") -> None:
    """Stop kube-router and remove its RBAC; its chains and ipsets go with the node's namespace."""
    node._end(PROC)
    for kind in ("clusterrolebindings", "clusterroles"):
        node.cluster._api("DELETE", f"/apis/rbac.authorization.k8s.io/v1/{kind}/{ROLE}-{node.run}")


def in_node(node: "RealNode", *args: str) -> subprocess.CompletedProcess[str]:
    """Run a command in the node's network namespace (iptables, ipset: what the enforcer made)."""
    from devtools.kube_node import sh

    return sh("nsenter", f"--net=/run/netns/{node.netns}", *args, check=False, timeout=20)


def policy_rules(node: "RealNode") -> str:
    """The node's filter table as kube-router left it (for a failing test's output)."""
    return f"==== {node.name} iptables ====\n{in_node(node, 'iptables-save', '-t', 'filter').stdout}"
