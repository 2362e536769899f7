"""deploy/kubernetes applied as the README says, its orchestrator Pod run on the real kubelet node: the kubelet's
own probes find it live and ready (readiness asks the apiserver and the tenant's real LiveKit), it serves the
tenant from the mounted tenants file, and a trigger sent to the Pod starts an agent Pod that joins the room.

What the test cluster lacks, and the only changes made to the rendered objects for it: no kube-proxy, so the
`kubernetes` Service VIP leads nowhere; the Pod is given the apiserver's address explicitly (hostAliases
`kubernetes` → the node's apiserver relay, KUBERNETES_SERVICE_HOST/PORT), and both Pods get the real node's
selector and toleration. Everything else is applied as rendered (image pinned, secrets from the generators).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from devtools.agent_room import eventually
from devtools.kube_cluster import KubeCluster, pod_summary
from devtools.kube_node import LABEL, TAINT, RealNode
from devtools.livekit_server import LiveKitServer
from orchestrator.core.models import LiveKitCredentials
from orchestrator.livekit.client import LiveKitGateway
from tests.conftest import CLIENT_ID, write_tenants
from tests.kubernetes.manifests import move, one, operator_copy, render

pytestmark = [pytest.mark.kubernetes, pytest.mark.timeout(600)]
ROOT = Path(__file__).resolve().parents[2]
IMAGE = f"agent-orchestrator/orchestrator:test-{hashlib.sha256(str(ROOT).encode()).hexdigest()[:10]}"  # this checkout's
AGENT = "agent-farah"


def built_image() -> str:
    """This checkout's orchestrator image (one tag per checkout, as the compose tests do); the build script tags the
    pinned version too, and the rendered manifests must name exactly that tag."""
    out = subprocess.run(["scripts/build-orchestrator-image"], cwd=ROOT, env={**os.environ, "ORCH_IMAGE": IMAGE},
                         capture_output=True, text=True, timeout=1200, check=False)
    assert out.returncode == 0, out.stderr[-3000:]
    return IMAGE


@pytest.fixture(scope="module")
def admin_key() -> str:
    return secrets.token_hex(32)


@pytest.fixture(scope="module")
def deployed(kube_cluster: KubeCluster, real_node: RealNode, node_livekit: LiveKitServer, admin_key: str,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, dict[str, Any]]]:
    image = built_image()
    real_node.import_image(image)
    tmp = tmp_path_factory.mktemp("realdeploy")
    tenants = write_tenants(tmp / "tenants.yaml", node_livekit)
    data = yaml.safe_load(tenants.read_text())
    reachable = f"ws://{real_node.host_ip}:{node_livekit.port}"  # the address a Pod on the node reaches LiveKit at
    for client in data["clients"]:
        client["livekit"]["url"] = reachable
    tenants.write_text(yaml.safe_dump(data))
    run = secrets.token_hex(4)
    namespaces = (f"orch-{run}", f"agents-{run}")
    docs = move(render(operator_copy(tmp / "kubernetes", tenants=tenants, admin_key=admin_key)), namespaces)

    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = pod["containers"][0]
    version = container["image"].rsplit(":", 1)[1]
    assert container["image"] == f"agent-orchestrator/orchestrator:{version}" and version != "latest"
    assert _image_id(container["image"]) == _image_id(image), "the build script did not tag the pinned version"
    container["image"] = image  # the same image under this checkout's tag (other checkouts retag the version)
    placement = {"nodeSelector": {LABEL[0]: LABEL[1]}, "tolerations": [{**TAINT, "operator": "Equal"}]}
    pod.update(placement)
    # No kube-proxy here: the `kubernetes` Service VIP leads nowhere, so the apiserver is named explicitly.
    pod["hostAliases"] = [{"ip": real_node.host_ip, "hostnames": ["kubernetes"]}]  # the certificate names "kubernetes"
    container.setdefault("env", []).extend([{"name": "KUBERNETES_SERVICE_HOST", "value": "kubernetes"},
                                            {"name": "KUBERNETES_SERVICE_PORT", "value": "6443"}])
    config = one(docs, "ConfigMap")["data"]
    config.update({
        "ORCH_SCOPE": f"d-{run}", "ORCH_AGENT_MEMORY": "256m", "ORCH_AGENT_CPUS": "0.5",
        "ORCH_KUBE_NODE_SELECTOR": json.dumps(placement["nodeSelector"]), "ORCH_KUBE_TOLERATIONS": json.dumps(placement["tolerations"]),
        "ORCH_KUBE_AGENT_EGRESS": f"{real_node.host_ip}/32",  # LiveKit's address, private: allowed by name
    })
    out = kube_cluster.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all(docs), check=False)
    assert out.returncode == 0, out.stderr
    try:
        yield namespaces[0], namespaces[1], {"docs": docs}
    finally:
        for namespace in namespaces:
            print(f"\n==== pods in {namespace} ====\n{pod_summary(kube_cluster.pods(namespace))}")
        logs = kube_cluster.kubectl("logs", "-n", namespaces[0], "deploy/agent-orchestrator", "--tail=60", check=False)
        print(f"==== orchestrator log ====\n{logs.stdout[-6000:]}{logs.stderr[-1000:]}")
        for doc in docs:
            if "namespace" not in doc["metadata"] and doc["kind"] != "Namespace":
                kube_cluster.kubectl("delete", doc["kind"].lower(), doc["metadata"]["name"], check=False)
        for namespace in namespaces:
            kube_cluster.delete_namespace(namespace)


def _image_id(tag: str) -> str:
    return subprocess.run(["docker", "image", "inspect", "-f", "{{.Id}}", tag], capture_output=True, text=True, check=True).stdout.strip()


async def orchestrator_pod(kube_cluster: KubeCluster, namespace: str) -> dict[str, Any]:
    async def ready() -> dict[str, Any] | None:
        pods = kube_cluster.pods(namespace, selector="app.kubernetes.io/component=orchestrator")
        conditions = {c["type"]: c["status"] for c in (pods[0]["status"].get("conditions") or [])} if pods else {}
        return pods[0] if conditions.get("Ready") == "True" else None

    return await eventually(ready, timeout=180, what="the orchestrator Pod Ready on the real node (kubelet's /readyz probe)")


async def test_orchestrator_pod_runs_on_the_real_node_and_its_probes_answer(
    deployed: tuple[str, str, dict[str, Any]], kube_cluster: KubeCluster, real_node: RealNode
) -> None:
    pod = await orchestrator_pod(kube_cluster, deployed[0])
    assert pod["spec"]["nodeName"] == real_node.name
    status = pod["status"]["containerStatuses"][0]
    assert status["ready"] and status["restartCount"] == 0, status
    async with httpx.AsyncClient(base_url=f"http://{pod['status']['podIP']}:8000", timeout=10) as http:
        live, ready = await http.get("/livez"), await http.get("/readyz")
    assert live.status_code == 200 and live.json()["status"] == "ok", live.text
    # Readiness from inside the Pod: the apiserver answered on the ServiceAccount's token, the tenant's LiveKit too —
    # the mounted tenants file's (the embedded demo tenant's ws://127.0.0.1:7880 would be unreachable from the Pod).
    assert ready.status_code == 200 and ready.json()["engine"] == "ok" and ready.json()["livekit"] == "ok", ready.text


async def test_a_trigger_sent_to_the_pod_starts_an_agent_that_joins_the_room(
    deployed: tuple[str, str, dict[str, Any]], kube_cluster: KubeCluster, real_node: RealNode,
    node_livekit: LiveKitServer, admin_key: str
) -> None:
    pod = await orchestrator_pod(kube_cluster, deployed[0])
    room = f"deployed-{secrets.token_hex(3)}"
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=f"http://{pod['status']['podIP']}:8000", timeout=30, headers=headers) as http:
        # The deployed pool (on by default, taught at start) has a member waiting: the trigger claims it, and the
        # handover goes through pods/attach on the orchestrator's own ServiceAccount (the Role's rights, not ours).
        async def member_idle() -> dict[str, Any] | None:
            state = (await http.get("/api/v1/admin/pool")).json()
            return state if sum(p["idle"] for p in state["pools"]) >= 1 else None

        await eventually(member_idle, timeout=180, what="an idle member in the deployed orchestrator's pool")
        resp = await http.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "room_name": room, "user_id": "u1", "client_id": CLIENT_ID})
        assert resp.status_code == 201, resp.text
        assert resp.json()["status"] == "created"
        claims = (await http.get("/api/v1/admin/pool")).json()["claims"]
        assert claims.get("warm") == 1 and not claims.get("handover-failed"), claims

        async def agent_running() -> dict[str, Any] | None:
            pods = kube_cluster.pods(deployed[1], selector="agent-orchestrator.managed=true")
            return pods[0] if pods and pods[0]["status"].get("phase") == "Running" else None

        agent = await eventually(agent_running, timeout=120, what="the agent Pod Running in the agents' namespace")
        assert agent["spec"]["nodeName"] == real_node.name
        livekit = LiveKitGateway()
        creds = LiveKitCredentials(url=node_livekit.url, api_key=node_livekit.api_key, api_secret=node_livekit.api_secret)
        try:
            async def joined() -> bool:
                return any(p.identity == AGENT for p in await livekit.list_participants(creds, room=room))

            await eventually(joined, timeout=120, what="the agent listed in its LiveKit room")
        finally:
            await livekit.aclose()
        closed = await http.post(f"/api/v1/admin/rooms/{CLIENT_ID}/{room}/close")
        assert closed.status_code == 200, closed.text

    async def gone() -> bool:
        return not kube_cluster.pods(deployed[1], selector="agent-orchestrator.managed=true")

    await eventually(gone, timeout=60, what="the agent Pod gone after close")


async def test_a_livekit_outage_takes_the_pod_out_of_service_and_never_restarts_it(
    deployed: tuple[str, str, dict[str, Any]], kube_cluster: KubeCluster, node_livekit: LiveKitServer
) -> None:
    pod = await orchestrator_pod(kube_cluster, deployed[0])
    name = pod["metadata"]["name"]

    def container(of: str) -> dict[str, Any]:
        found = kube_cluster.pods(deployed[0], selector="app.kubernetes.io/component=orchestrator")
        return next(p for p in found if p["metadata"]["name"] == of)["status"]["containerStatuses"][0]

    node_livekit.stop()
    try:
        async def unready() -> bool:
            return not container(name)["ready"]

        await eventually(unready, timeout=60, what="the kubelet's readiness probe failing while LiveKit is down")
        async with httpx.AsyncClient(base_url=f"http://{pod['status']['podIP']}:8000", timeout=10) as http:
            ready, live = await http.get("/readyz"), await http.get("/livez")
        assert ready.status_code == 503 and ready.json()["livekit"] == "1 of 1 unreachable", ready.text
        assert live.status_code == 200, live.text
        assert container(name)["restartCount"] == 0, "liveness must not depend on LiveKit"
    finally:
        for attempt in range(3):  # same port, same keys; its RTC ports are fresh and may be taken meanwhile
            try:
                node_livekit.start()
                break
            except RuntimeError:
                if attempt == 2:
                    raise

    async def ready_again() -> bool:
        return bool(container(name)["ready"])

    await eventually(ready_again, timeout=60, what="the Pod ready again once LiveKit is back")
    assert container(name)["restartCount"] == 0
