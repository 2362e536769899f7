"""The agents' namespace on a real kube-apiserver: the NetworkPolicy the runtime ensures at start, the runtime class
honoured or refused, and the orchestrator's start refused when the agents' namespace is missing.

These check the objects as the API server stores them; enforcing a policy takes a CNI on real nodes (the
kube-nodes tests), which kwok nodes do not have.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest

from orchestrator.core.errors import ConfigurationError
from orchestrator.core.models import Mode, TriggerOutcome
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.runtime.kubernetes.policy import NOT_PUBLIC_V4, POLICY_NAME
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.services.trigger import TriggerService
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from tests.conftest import CLIENT_ID
from devtools.kube_cluster import KubeCluster

pytestmark = pytest.mark.kubernetes


def _policy(kube_cluster: KubeCluster, namespace: str) -> dict:
    return kube_cluster.api("GET", f"/apis/networking.k8s.io/v1/namespaces/{namespace}/networkpolicies/{POLICY_NAME}")


async def test_start_ensures_the_agents_network_policy_and_puts_it_back_when_changed(
    kube_settings: Callable[..., Settings], kube_cluster: KubeCluster
) -> None:
    settings = kube_settings(kube_agent_egress=["10.244.0.0/16"])
    runtime = KubernetesRuntime.from_settings(settings)
    try:
        await runtime.preflight(network="host")
        stored = _policy(kube_cluster, runtime.namespace)
        spec = stored["spec"]
        assert spec["podSelector"] == {} and spec["policyTypes"] == ["Ingress", "Egress"]
        assert not spec.get("ingress")  # no rule: nothing may connect to an agent
        dns, public, extra = spec["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert public["to"][0]["ipBlock"] == {"cidr": "0.0.0.0/0", "except": list(NOT_PUBLIC_V4)}
        assert extra["to"] == [{"ipBlock": {"cidr": "10.244.0.0/16"}}]

        # Someone opens it up: the next start puts ours back; a start with nothing to change writes nothing.
        stored["spec"]["ingress"] = [{}]
        kube_cluster.api("PUT", f"/apis/networking.k8s.io/v1/namespaces/{runtime.namespace}/networkpolicies/{POLICY_NAME}", stored)
        await runtime.preflight(network="host")
        again = _policy(kube_cluster, runtime.namespace)
        assert not again["spec"].get("ingress")
        await runtime.preflight(network="host")
        assert _policy(kube_cluster, runtime.namespace)["metadata"]["resourceVersion"] == again["metadata"]["resourceVersion"]
    finally:
        await runtime.aclose()


async def test_public_egress_can_be_turned_off_leaving_dns_only(kube_settings: Callable[..., Settings], kube_cluster: KubeCluster) -> None:
    runtime = KubernetesRuntime.from_settings(kube_settings(kube_agent_egress_public=False))
    try:
        await runtime.preflight(network="host")
        assert len(_policy(kube_cluster, runtime.namespace)["spec"]["egress"]) == 1
    finally:
        await runtime.aclose()


@pytest.mark.parametrize(("setting", "value", "message"), [
    ("kube_namespace", "nowhere-{}", "ORCH_KUBE_NAMESPACE.*does not exist.*kubectl create namespace"),
    ("agent_runtime", "nosuch-{}", "ORCH_AGENT_RUNTIME=.*no RuntimeClass"),
])
async def test_a_missing_namespace_or_runtime_class_refuses_the_start_naming_the_fix(
    kube_settings: Callable[..., Settings], setting: str, value: str, message: str
) -> None:
    runtime = KubernetesRuntime.from_settings(kube_settings(**{setting: value.format(secrets.token_hex(3))}))
    try:
        with pytest.raises(ConfigurationError, match=message):
            await runtime.preflight(network="host")
    finally:
        await runtime.aclose()


@pytest.fixture
def runtime_class(kube_cluster: KubeCluster) -> Iterator[str]:
    name = f"sandbox-{secrets.token_hex(3)}"
    kube_cluster.api("POST", "/apis/node.k8s.io/v1/runtimeclasses",
                     {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass", "metadata": {"name": name}, "handler": "runsc"})
    yield name
    kube_cluster.api("DELETE", f"/apis/node.k8s.io/v1/runtimeclasses/{name}")


async def test_an_existing_runtime_class_is_the_agent_pods_runtime_class_name(
    kube_settings: Callable[..., Settings], kube_cluster: KubeCluster, runtime_class: str
) -> None:
    settings = kube_settings(agent_runtime=runtime_class)
    runtime = KubernetesRuntime.from_settings(settings)
    livekit = LiveKitGateway()
    try:
        await runtime.preflight(network="host")
        svc = TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime)
        result = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="sandboxed")
        assert result.outcome is TriggerOutcome.created
        pod = kube_cluster.api("GET", f"/api/v1/namespaces/{runtime.namespace}/pods/{result.container.name}")
        assert pod["spec"]["runtimeClassName"] == runtime_class
        assert pod["spec"]["automountServiceAccountToken"] is False
    finally:
        await livekit.aclose()
        await runtime.aclose()
