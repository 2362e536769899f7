"""NetworkPolicy enforced on a real node (kube-router's firewall controller, devtools/netpol.py): the isolation
probe runs inside a real agent pod, first with no policy (it reaches everything: the test can fail), then with
the runtime's own policy (no ingress; egress to DNS and to LiveKit's ports on LiveKit's address only): LiveKit
still reachable, the agent still in its room and a fresh agent joins and is heard; another agent pod, and the
apiserver relay and a host service that share LiveKit's address on other ports, unreachable.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from devtools.agent_room import Participant, eventually, loudest_sample
from devtools.kube_cluster import KubeCluster
from devtools.kube_node import RealNode
from devtools.livekit_server import LiveKitServer
from devtools.netpol import policy_rules
from orchestrator.core.models import ContainerStatus, LiveKitCredentials, Mode, TriggerOutcome
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.runtime.kubernetes.policy import POLICY_NAME
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from orchestrator.services.trigger import TriggerService
from orchestrator.tenants.file_store import FileTenantStore
from tests.conftest import CLIENT_ID

pytestmark = pytest.mark.kubernetes

PROBE = Path(__file__).resolve().parents[2] / "devtools" / "isolation_probe.py"
AGENT = "agent-clarence-coherence"
LISTEN_PORT = 8081
# What the probe must not reach once the policy is in place (and does reach without it).
FORBIDDEN = ("other_tenant_agent", "tcp_apiserver_relay", "tcp_host_service", "orch_tcp_gateway", "orch_admin_gateway")


@contextmanager
def host_service(address: str) -> Iterator[int]:
    """An HTTP server on the host's end of the node's veth, answering 200 to anything (an orchestrator stand-in)."""

    class Answer(BaseHTTPRequestHandler):
        def _ok(self) -> None:
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"host service")

        do_GET = do_POST = _ok

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer((address, 0), Answer)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


async def _listed(livekit: LiveKitGateway, server: LiveKitServer, room: str) -> bool:
    creds = LiveKitCredentials(url=server.url, api_key=server.api_key, api_secret=server.api_secret)
    return AGENT in {p.identity for p in await livekit.list_participants(creds, room=room)}


def _connects(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def _probe(cluster: KubeCluster, namespace: str, pod: str, targets: dict[str, Any]) -> dict[str, Any]:
    res = cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", PROBE.read_text(), json.dumps(targets), check=False)
    assert res.returncode == 0, f"probe failed ({res.returncode}): {res.stderr[-2000:]}"
    return json.loads(res.stdout.strip().splitlines()[-1])


def _pod_connects(cluster: KubeCluster, namespace: str, pod: str, host: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
    return cluster.kubectl("exec", "-n", namespace, pod, "--", "python3", "-c", code, check=False).returncode == 0


async def test_probe_in_an_agent_pod_reaches_only_livekit_once_the_policy_is_enforced(
    node_settings: Callable[..., Settings], real_node: RealNode, node_livekit: LiveKitServer, kube_cluster: KubeCluster
) -> None:
    settings = node_settings()
    runtime = KubernetesRuntime.from_settings(settings)
    livekit = LiveKitGateway()
    svc = TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime)
    ns = runtime.namespace
    mine, theirs = f"{settings.scope}-mine", f"{settings.scope}-theirs"
    relay = urlsplit(yaml.safe_load((real_node.base / "kubelet.kubeconfig").read_text())["clusters"][0]["cluster"]["server"])
    listener: subprocess.Popen[bytes] | None = None
    pods: dict[str, str] = {}
    try:
        for room in (mine, theirs):
            out = await svc.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u", room_name=room)
            assert out.outcome is TriggerOutcome.created
            pods[room] = out.container.name
        for pod in pods.values():
            async def running(pod: str = pod) -> bool:
                info = await runtime.get(pod)
                return info is not None and info.status is ContainerStatus.running
            await eventually(running, timeout=90, what=f"agent pod {pod} Running on the real node")
        other_ip = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{pods[theirs]}")["status"]["podIP"]

        # The other agent listens on a port (kept open by this exec); the host reaches it, so the listener is real.
        listener = subprocess.Popen(["kubectl", f"--kubeconfig={kube_cluster.admin_kubeconfig}", "exec", "-n", ns, pods[theirs], "--",
                                     "python3", "-c", f"import socket; s=socket.socket(); s.bind(('0.0.0.0', {LISTEN_PORT})); s.listen(8)\n"
                                     "while True: s.accept()[0].close()"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        await eventually(lambda: asyncio.to_thread(_connects, other_ip, LISTEN_PORT), timeout=20, what="the other agent's listener")

        with host_service(real_node.host_ip) as service_port:
            targets = {
                "gateway": real_node.host_ip, "orch_port": service_port, "livekit_port": node_livekit.port,
                "other_agent_ip": other_ip, "other_agent_port": LISTEN_PORT, "other_room": theirs, "other_identity": AGENT,
                "trigger_body": {"agent_slug": "clarence-coherence", "room_name": "probe-made", "user_id": "p", "client_id": CLIENT_ID},
                "tcp": {"apiserver_relay": [relay.hostname, relay.port], "host_service": [real_node.host_ip, service_port]},
            }
            # No policy yet: the probe reaches every target, so each "unreachable" below is the policy's doing.
            before = await asyncio.to_thread(_probe, kube_cluster, ns, pods[mine], targets)
            print("\nprobe without policy:", json.dumps({k: before["must_fail"][k]["ok"] for k in FORBIDDEN}))
            assert all(before["must_fail"][k]["ok"] for k in FORBIDDEN), before["must_fail"]
            assert before["must_work"]["livekit_http"]["ok"], before["must_work"]

            policies = f"/apis/networking.k8s.io/v1/namespaces/{ns}/networkpolicies"
            # The product's own policy, as the runtime ensures it at start: no ingress, egress to DNS, public addresses
            # and LiveKit's address on LiveKit's ports only (the URL's signal port, ORCH_AGENT_HOST_PORTS' RTC ports).
            t_applied = time.perf_counter()
            await runtime.preflight(network="")
            product = kube_cluster.api("GET", f"{policies}/{POLICY_NAME}")
            assert product["spec"]["egress"][-1] == {"to": [{"ipBlock": {"cidr": f"{real_node.host_ip}/32"}}], "ports": [
                {"protocol": "TCP", "port": node_livekit.port}, {"protocol": "TCP", "port": node_livekit.rtc_tcp_port},
                {"protocol": "UDP", "port": node_livekit.rtc_udp_port}]}

            async def enforced() -> bool:
                return not await asyncio.to_thread(_pod_connects, kube_cluster, ns, pods[mine], other_ip, LISTEN_PORT)

            await eventually(enforced, timeout=30, what="kube-router enforcing the runtime's policy (the other agent unreachable)")
            t_enforced = time.perf_counter()
            # It is kube-router's doing: its chains in the node's namespace name the policy.
            assert f"{POLICY_NAME} namespace {ns}" in policy_rules(real_node)
            after = await asyncio.to_thread(_probe, kube_cluster, ns, pods[mine], targets)
            print("probe with the runtime's policy:", json.dumps({k: after["must_fail"][k] for k in FORBIDDEN}))
            # The host service and the apiserver relay listen on LiveKit's own address: only the port keeps them out.
            for check in FORBIDDEN:
                assert not after["must_fail"][check]["ok"], f"{check} reachable under the policy: {after['must_fail'][check]}"
            assert after["must_work"]["livekit_http"]["ok"], after["must_work"]
            assert after["must_work"]["livekit_validate_own_token"]["ok"], after["must_work"]

            # A fresh agent under the policy joins and is heard: signalling and media pass on LiveKit's ports alone, and
            # LiveKit's ICE checks and media come back as replies to the agent's own (no ingress rule).
            fresh = f"{settings.scope}-fresh"
            out = await svc.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u", room_name=fresh)
            pods[fresh] = out.container.name
            async with Participant(node_livekit.url, out.user_token) as human:
                await eventually(lambda: _listed(livekit, node_livekit, fresh), timeout=90, what="a fresh agent joined under the policy")
                t_listed = time.perf_counter()
                track = await human.track_from(AGENT, timeout=30)
                assert await loudest_sample(track, timeout=20, enough=5000) >= 5000
            t_heard = time.perf_counter()
        # No ingress either: the host no longer reaches the other agent's listener.
        assert not _connects(other_ip, LISTEN_PORT)
        # The agent kept its room through it all (its established media and signalling were allowed).
        creds = LiveKitCredentials(url=node_livekit.url, api_key=node_livekit.api_key, api_secret=node_livekit.api_secret)
        assert AGENT in {p.identity for p in await livekit.list_participants(creds, room=mine)}
        # The enforcer follows the policy away too: deleted, the other agent is reachable again.
        kube_cluster.api("DELETE", f"{policies}/{POLICY_NAME}")
        t_deleted = time.perf_counter()
        await eventually(lambda: asyncio.to_thread(_pod_connects, kube_cluster, ns, pods[mine], other_ip, LISTEN_PORT), timeout=30,
                         what="the other agent reachable again once the policy is deleted")
        print(f"policy created → enforced (first refused connection) {t_enforced - t_applied:.2f} s; fresh agent listed under it "
              f"{t_listed - t_enforced:.2f} s after, heard {t_heard - t_enforced:.2f} s after; "
              f"deleted → lifted {time.perf_counter() - t_deleted:.2f} s")
    except BaseException:
        print(kube_cluster.kubectl("get", "pods,networkpolicies", "-n", ns, "-o", "wide", check=False).stdout)
        print(policy_rules(real_node)[-6000:])
        print(real_node.dump_logs(4000))
        raise
    finally:
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        for pod in pods.values():
            await runtime.remove(pod)
        await livekit.aclose()
        await runtime.aclose()



def test_a_node_whose_enforcer_dies_at_start_is_torn_down(kube_cluster: KubeCluster, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """kube-router exiting at start fails the node's start, which then leaves nothing behind (namespace, processes,
    the enforcer's RBAC). No images: this node never runs a pod."""
    fake = tmp_path / "kube-router"
    fake.write_text("#!/bin/sh\necho 'kube-router: refusing to start' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setenv("KUBE_ROUTER_BIN_DIR", str(tmp_path))
    node = RealNode(cluster=kube_cluster, images=(), sandbox_image="unused")
    with pytest.raises(RuntimeError, match="kube-router of node .* exited with 3"):
        node.start(timeout_s=30)
    assert node.netns not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert not node.base.exists() and not node.state.exists()
    assert kube_cluster._api("GET", f"/apis/rbac.authorization.k8s.io/v1/clusterroles/agent-orchestrator-test:kube-router-{node.run}").status_code == 404
    assert node.node() is None
