"""deploy/kubernetes applied to the real apiserver: every object is admitted (restricted Pod Security
included), the orchestrator's pod gets scheduled, and its ServiceAccount can do what the runtime needs
and nothing more — checked with `kubectl auth can-i` and by running the runtime on its own token."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import ContainerStatus, Mode, TriggerOutcome
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID
from devtools.agent_room import eventually
from devtools.kube_cluster import NODES, KubeCluster, pod_summary
from tests.kubernetes.manifests import DEPLOY, OPERATOR_FILES, move, operator_copy, render

pytestmark = pytest.mark.kubernetes
SA = "agent-orchestrator"

# (verb, resource, allowed) in the agents' namespace: what the runtime needs, and a sample of what it must not have.
CAN_I = [
    ("create", "pods", True), ("get", "pods", True), ("list", "pods", True), ("watch", "pods", True), ("delete", "pods", True),
    ("get", "pods/log", True), ("create", "secrets", True), ("list", "events", True), ("watch", "events.events.k8s.io", True),
    ("create", "networkpolicies.networking.k8s.io", True),
    ("patch", "pods", True), ("create", "pods/attach", True), ("get", "pods/attach", True),  # the pool's claim, handover
    ("update", "pods", False), ("create", "pods/exec", False), ("create", "pods/eviction", False), ("get", "pods/status", False), ("get", "secrets", False),
    ("list", "secrets", False), ("delete", "secrets", False), ("create", "deployments.apps", False), ("list", "nodes", False),
    ("create", "roles.rbac.authorization.k8s.io", False), ("create", "rolebindings.rbac.authorization.k8s.io", False),
    ("list", "configmaps", False), ("create", "serviceaccounts/token", False), ("delete", "namespaces", False),
    ("delete", "networkpolicies.networking.k8s.io", False), ("list", "networkpolicies.networking.k8s.io", False),
]


@pytest.fixture(scope="module")
def operator_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return operator_copy(tmp_path_factory.mktemp("deploy") / "kubernetes")


def rendered(namespaces: tuple[str, str], kube_cluster: KubeCluster, operator_dir: Path) -> list[dict[str, Any]]:
    """`kubectl kustomize` of the operator's copy, moved to the test's two namespaces."""
    return move(render(operator_dir), namespaces)


@pytest.fixture(scope="module")
def deployed(kube_cluster: KubeCluster, operator_dir: Path) -> Iterator[tuple[str, str]]:
    run = secrets.token_hex(4)
    namespaces = (f"orch-{run}", f"agents-{run}")
    docs = rendered(namespaces, kube_cluster, operator_dir)
    out = kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs))
    assert out.returncode == 0, out.stderr
    yield namespaces
    for doc in docs:
        if "namespace" not in doc["metadata"] and doc["kind"] != "Namespace":
            kube_cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)
    for namespace in namespaces:
        kube_cluster.delete_namespace(namespace)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"])
    assert listed == {p.name for p in DEPLOY.glob("*.yaml")} - {"kustomization.yaml", *OPERATOR_FILES}


def test_agents_and_orchestrator_live_in_separate_namespaces(
    deployed: tuple[str, str], kube_cluster: KubeCluster, operator_dir: Path
) -> None:
    docs = rendered(deployed, kube_cluster, operator_dir)
    where = {(d["kind"], d["metadata"]["name"]): d["metadata"].get("namespace") for d in docs}
    assert where[("Deployment", "agent-orchestrator")] == deployed[0]
    assert where[("Role", "agent-orchestrator")] == where[("NetworkPolicy", "agent-orchestrator-agents")] == deployed[1]
    policy = kube_cluster.api("GET", f"/apis/networking.k8s.io/v1/namespaces/{deployed[1]}/networkpolicies/agent-orchestrator-agents")
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"] and not policy["spec"].get("ingress")


async def test_manifests_apply_and_the_orchestrator_pod_is_scheduled(
    deployed: tuple[str, str], kube_cluster: KubeCluster, operator_dir: Path
) -> None:
    for doc in rendered(deployed, kube_cluster, operator_dir):
        ns = ["-n", doc["metadata"]["namespace"]] if "namespace" in doc["metadata"] else []
        assert kube_cluster.kubectl("get", doc["kind"].lower(), doc["metadata"]["name"], *ns, check=False).returncode == 0, doc["kind"]

    async def running() -> list[dict[str, Any]] | None:
        pods = kube_cluster.pods(deployed[0], selector="app.kubernetes.io/name=agent-orchestrator")
        return pods if pods and pods[0]["status"].get("phase") == "Running" else None

    try:
        pods = await eventually(running, timeout=60, what="the orchestrator Deployment's pod Running on a kwok node")
    except AssertionError:
        print(pod_summary(kube_cluster.pods(deployed[0])))
        print(kube_cluster.kubectl("get", "events", "-n", deployed[0], check=False).stdout)
        raise
    assert pods[0]["spec"]["nodeName"] in NODES and pods[0]["spec"]["serviceAccountName"] == SA


@pytest.mark.parametrize(("verb", "resource", "allowed"), CAN_I)
def test_service_account_can_do_what_it_needs_and_no_more(
    deployed: tuple[str, str], kube_cluster: KubeCluster, verb: str, resource: str, allowed: bool
) -> None:
    what = resource.split("/")
    # `pods/exec` would mean the pod named "exec": a subresource needs --subresource.
    target = [what[0], f"--subresource={what[1]}"] if len(what) == 2 else what
    who = f"--as=system:serviceaccount:{deployed[0]}:{SA}"
    result = kube_cluster.kubectl("auth", "can-i", verb, *target, "-n", deployed[1], who, check=False)
    assert (result.stdout.strip() == "yes") is allowed, (verb, resource, result.stdout, result.stderr)
    # Nothing at all outside the agents' namespace: not in its own (where its Secret is), not in default.
    for elsewhere in (deployed[0], "default"):
        other = kube_cluster.kubectl("auth", "can-i", verb, *target, "-n", elsewhere, who, check=False)
        assert other.stdout.strip() == "no", (elsewhere, verb, resource)


async def test_the_runtime_works_with_the_service_accounts_own_token(
    deployed: tuple[str, str], kube_cluster: KubeCluster, ktenants: Path
) -> None:
    kubeconfig = kube_cluster.service_account_kubeconfig(namespace=deployed[0], name=SA)
    settings = Settings(runtime="kubernetes", scope="sa", tenants_file=ktenants, kubeconfig=kubeconfig, kube_namespace=deployed[1],
                        agent_memory="64m", agent_cpus=0.1, reconcile_enabled=False)  # type: ignore[call-arg]
    runtime = KubernetesRuntime.from_settings(settings)
    livekit = LiveKitGateway()
    svc = TriggerService(settings=settings, tenants=FileTenantStore(ktenants), livekit=livekit, runtime=runtime)
    try:
        await runtime.preflight(network="host")  # the shipped policy is ours already: read, not rewritten
        result = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="u", room_name="rbac")
        assert result.outcome is TriggerOutcome.created
        watch = runtime.watch(scope="sa")
        first = await anext(watch)
        await watch.aclose()
        assert first.kind == "relist" and [c.id for c in first.items] == [result.container.id]

        async def running() -> bool:
            info = await runtime.get(result.container.name)
            return info is not None and info.status is ContainerStatus.running

        await eventually(running, timeout=30, what="the pod Running")
        assert await runtime.logs_tail(result.container.name) == ""  # kwok serves no logs; allowed, just empty
        await runtime.stop(result.container.id, timeout_s=1)
        await runtime.remove(result.container.id)
        assert await runtime.get(result.container.name) is None
    finally:
        await livekit.aclose()
        await runtime.aclose()
