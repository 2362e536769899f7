"""Fixtures for the Kubernetes runtime: one real control plane (+ kwok nodes) per session, a namespace per test."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from tests.conftest import write_tenants
from devtools.kube_cluster import KubeCluster, pod_summary, start_cluster
from devtools.livekit_server import LiveKitServer

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
