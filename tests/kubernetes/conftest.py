"""Fixtures for the Kubernetes runtime: one real control plane (+ kwok nodes) per session, a namespace per test,
and (for tests that need containers to really run) one real kubelet node with a LiveKit its pods reach."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from tests.conftest import write_tenants
from devtools.docker_helpers import TINY_IMAGE
from devtools.kube_cluster import KubeCluster, pod_summary, start_cluster
from devtools.livekit_server import LiveKitServer, free_port

AGENT_IMAGE = "agent-orchestrator/agent:latest"

if TYPE_CHECKING:
    from devtools.kube_node import RealNode

RESTRICTED = {"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/enforce-version": "latest"}


@pytest.fixture(scope="session")
def kube_cluster() -> Iterator[KubeCluster]:
    cluster = start_cluster(pod_watch_cache=False)  # so that compacting etcd really expires resourceVersions
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def kscope(request: pytest.FixtureRequest, kube_cluster: KubeCluster) -> Iterator[str]:
    """A fresh scope and its namespace (`agents-<scope>`, enforcing the restricted Pod Security Standard);
    its pods are printed when the test fails and the namespace is always deleted."""
    scope = f"k-{secrets.token_hex(4)}"
    kube_cluster.create_namespace(f"agents-{scope}", labels=RESTRICTED)
    yield scope
    rep = getattr(request.node, "rep_call", None)
    if rep is not None and rep.failed:
        print(f"\n==== pods in agents-{scope} ====\n{pod_summary(kube_cluster.pods(f'agents-{scope}'))}")
        print(kube_cluster.dump_logs(1500))
    kube_cluster.delete_namespace(f"agents-{scope}")


@pytest.fixture
def ktenants(tmp_path: Path, livekit_server: LiveKitServer) -> Path:
    return write_tenants(tmp_path / "tenants.yaml", livekit_server)


@pytest.fixture
def kube_settings(kscope: str, ktenants: Path, kube_cluster: KubeCluster) -> Callable[..., Settings]:
    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "runtime": "kubernetes", "scope": kscope, "tenants_file": ktenants, "kubeconfig": kube_cluster.admin_kubeconfig,
            "agent_image": "agent-orchestrator/agent:latest", "agent_memory": "64m", "agent_cpus": 0.1,
            "agent_stop_timeout_s": 2, "reconcile_enabled": False, "usage_sampling_enabled": False,
        }
        return Settings(**{**base, **overrides})  # type: ignore[arg-type]

    return make


@pytest.fixture
async def kruntime(kube_settings: Callable[..., Settings]) -> AsyncIterator[KubernetesRuntime]:
    runtime = KubernetesRuntime.from_settings(kube_settings())
    yield runtime
    await runtime.aclose()


@pytest.fixture(scope="session")
def real_node(kube_cluster: KubeCluster) -> Iterator["RealNode"]:
    """A kubelet node (own netns, containerd, CNI) holding the agent and tiny images; torn down at the end of the
    session. No node is an error (the test fails), never a skip: kwok alone proves nothing about running pods."""
    from devtools.kube_node import RealNode

    node = RealNode(cluster=kube_cluster, images=(AGENT_IMAGE, TINY_IMAGE), sandbox_image=f"docker.io/{TINY_IMAGE}").start()
    print(f"\nreal node {node.name} Ready: {node.timings}")
    try:
        yield node
    finally:
        problems = node.stop()
        assert not problems, f"real node {node.name} left traces: {problems}"


@pytest.fixture(scope="session")
def node_livekit(real_node: "RealNode") -> Iterator[LiveKitServer]:
    """A livekit-server bound to loopback and to the host's end of the node's veth, the address its pods reach
    (their traffic leaves the node's namespace through that veth, with their own pod addresses).

    Media only on that address (rtc.ips.includes): with node_ip set and every host interface open, LiveKit rewrote
    each interface's host candidate to node_ip and kept one, often backed by another interface's socket, so its
    connectivity checks left from the host's eth0 address (seen: 192.0.2.2 in the node's nft trace, 8 of 8 for the
    pings it logged as from node_ip) and the agent's own checks to node_ip reached a socket it did not listen on.
    The agents' NetworkPolicy (egress to LiveKit's /32, no ingress) then dropped every check and the WebRTC
    transport never connected — the "gVisor under the policy" defect; without the policy the pod answered the
    other address and ICE passed."""
    server = LiveKitServer(api_key="nodekey", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=real_node.host_ip,
                           media_ips=[f"{real_node.host_ip}/32"]).start()
    yield server
    server.stop()


@pytest.fixture
def node_settings(kscope: str, tmp_path: Path, kube_cluster: KubeCluster, real_node: "RealNode",
                  node_livekit: LiveKitServer) -> Callable[..., Settings]:
    """Settings whose agent pods go to the real node (its label and taint) and reach LiveKit through its veth."""
    from devtools.kube_node import LABEL, TAINT

    tenants = write_tenants(tmp_path / "tenants.yaml", node_livekit)

    def make(**overrides: object) -> Settings:
        base: dict[str, object] = {
            "runtime": "kubernetes", "scope": kscope, "tenants_file": tenants, "kubeconfig": kube_cluster.admin_kubeconfig,
            "agent_image": AGENT_IMAGE, "agent_memory": "256m", "agent_cpus": 0.5, "agent_stop_timeout_s": 10,
            "agent_livekit_url": f"ws://{real_node.host_ip}:{node_livekit.port}",
            # LiveKit's RTC ports as its config has them: the agents' NetworkPolicy allows these (and the URL's port) only.
            "agent_host_ports": [f"{node_livekit.rtc_tcp_port}/tcp", f"{node_livekit.rtc_udp_port}/udp"],
            "kube_node_selector": {LABEL[0]: LABEL[1]}, "kube_tolerations": [{**TAINT, "operator": "Equal"}],
            "reconcile_enabled": False, "usage_sampling_enabled": False,
        }
        return Settings(**{**base, **overrides})  # type: ignore[arg-type]

    return make
