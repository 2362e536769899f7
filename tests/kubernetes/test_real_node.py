"""Agent pods on a real kubelet node (devtools/kube_node.py): the pod spec the Kubernetes runtime generates is
executed for real — the agent joins its LiveKit room from the pod and a human hears it — next to the kwok nodes.

A missing kubelet, containerd or CNI plugin fails these tests (the real_node fixture raises); nothing skips.
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from livekit import api

from devtools.kube_node import LABEL, TAINT, RealNode
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import ContainerInfo, ContainerStatus, LiveKitCredentials, Mode, TriggerOutcome
from orchestrator.services.reconciler import Reconciler
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID
from devtools.agent_room import Participant, eventually, loudest_sample
from devtools.kube_cluster import KUBE_VERSION, KubeCluster
from devtools.livekit_server import LiveKitServer

pytestmark = pytest.mark.kubernetes

AGENT = "agent-clarence-coherence"


def test_real_node_is_ready_tainted_and_refuses_anonymous_callers(real_node: RealNode, kube_cluster: KubeCluster) -> None:
    node = real_node.node()
    assert node is not None and real_node.ready()
    assert node["status"]["nodeInfo"]["kubeletVersion"] == KUBE_VERSION  # the version stamped in by scripts/build-kube
    assert node["metadata"]["labels"][LABEL[0]] == LABEL[1]
    assert TAINT in [{k: t.get(k) for k in ("key", "value", "effect")} for t in node["spec"].get("taints", [])]
    assert {"type": "InternalIP", "address": real_node.node_ip} in node["status"]["addresses"]
    # The kubelet answers only callers with a certificate from the cluster's CA (the apiserver's): no anonymous access.
    resp = httpx.get(f"https://{real_node.node_ip}:10250/pods", verify=False, timeout=5)
    assert resp.status_code == 401
    print(f"\nreal node timings: {real_node.timings}")


async def test_agent_pod_on_the_real_node_joins_livekit_is_heard_is_restricted_and_goes_on_close(
    node_settings: Callable[..., Settings], real_node: RealNode, node_livekit: LiveKitServer, kube_cluster: KubeCluster
) -> None:
    settings = node_settings()
    runtime = KubernetesRuntime.from_settings(settings)
    livekit = LiveKitGateway()
    tenants = FileTenantStore(settings.tenants_file)
    svc = TriggerService(settings=settings, tenants=tenants, livekit=livekit, runtime=runtime)
    creds = LiveKitCredentials(url=node_livekit.url, api_key=node_livekit.api_key, api_secret=node_livekit.api_secret)
    room = f"{settings.scope}-call"
    pod = ""
    try:
        t0 = time.perf_counter()
        first = await svc.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u1", room_name=room)
        t_created = time.perf_counter()
        assert first.outcome is TriggerOutcome.created
        pod = first.container.name

        async def running() -> ContainerInfo | None:
            info = await runtime.get(pod)
            return info if info is not None and info.status is ContainerStatus.running else None

        info = await eventually(running, timeout=60, what="the agent pod Running on the real node")
        t_running = time.perf_counter()
        assert info.node == real_node.name

        async def listed() -> api.ParticipantInfo | None:
            return next((p for p in await livekit.list_participants(creds, room=room) if p.identity == AGENT), None)

        agent = await eventually(listed, timeout=60, what=f"{AGENT} in LiveKit's ListParticipants of {room}")
        t_listed = time.perf_counter()
        assert agent.kind == api.ParticipantInfo.Kind.AGENT

        # A human joins and hears the agent's audio: it came out of the pod, through the node's veth, to LiveKit.
        async with Participant(node_livekit.url, first.user_token) as user:
            track = await user.track_from(AGENT, timeout=20)
            assert await loudest_sample(track, timeout=15, enough=5000) >= 5000
            t_heard = time.perf_counter()

        again = await svc.trigger(client_id=CLIENT_ID, agent_slug="clarence-coherence", mode=Mode.voice, user_id="u2", room_name=room)
        assert again.outcome is TriggerOutcome.reused and again.container.id == info.id

        # The restricted profile as the kernel sees it, from inside the running container (exec through the apiserver,
        # which authenticates to the kubelet with its client certificate).
        ns = runtime.namespace
        status = dict(
            line.split(":", 1) for line in kube_cluster.kubectl("exec", "-n", ns, pod, "--", "cat", "/proc/self/status").stdout.splitlines()
            if ":" in line
        )
        assert int(status["CapEff"].strip(), 16) == 0 and int(status["CapPrm"].strip(), 16) == 0
        assert status["NoNewPrivs"].strip() == "1" and status["Seccomp"].strip() == "2"
        assert status["Uid"].split()[:2] == ["10001", "10001"]
        assert kube_cluster.kubectl("exec", "-n", ns, pod, "--", "touch", "/root-is-read-only", check=False).returncode != 0
        assert kube_cluster.kubectl("exec", "-n", ns, pod, "--", "touch", "/tmp/writable").returncode == 0
        # The per-pod Secret reached the container as its environment (the token it joined with), not the pod spec.
        spec = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/pods/{pod}")
        env = {e["name"]: e for e in spec["spec"]["containers"][0]["env"]}
        secret = kube_cluster.api("GET", f"/api/v1/namespaces/{ns}/secrets/{env['LIVEKIT_TOKEN']['valueFrom']['secretKeyRef']['name']}")
        token = kube_cluster.kubectl("exec", "-n", ns, pod, "--", "printenv", "LIVEKIT_TOKEN").stdout.strip()
        assert token and token == base64.b64decode(secret["data"]["LIVEKIT_TOKEN"]).decode()

        # The agent's logs through our CLI (the runtime reads them from the kubelet via the apiserver).
        out = _cli(settings, "logs", room).stdout
        assert "published audio track" in out

        # Close: the operator's path (reconciler) stops the pod; the kubelet really ends it and LiveKit sees the agent go.
        reconciler = Reconciler(settings=settings, runtime=runtime, tenants=tenants, livekit=livekit, launcher=svc)
        reconciler.close_room(CLIENT_ID, room)
        await reconciler.run_once()

        async def gone() -> bool:
            return await runtime.get(pod) is None and not kube_cluster.pods(ns)

        await eventually(gone, timeout=30, what="the agent pod gone after close")
        t_gone = time.perf_counter()
        print(f"\nreal node: trigger answered {t_created - t0:.2f} s, pod Running {t_running - t0:.2f} s, agent listed by LiveKit "
              f"{t_listed - t0:.2f} s, heard {t_heard - t0:.2f} s after the trigger; close → pod gone {t_gone - t_heard:.2f} s")
    except BaseException:
        _dump(kube_cluster, real_node, runtime.namespace, pod)
        print(node_livekit.log_tail(3000))
        raise
    finally:
        await livekit.aclose()
        await runtime.aclose()


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    env.update({"ORCH_RUNTIME": "kubernetes", "ORCH_SCOPE": settings.scope, "ORCH_KUBECONFIG": str(settings.kubeconfig),
                "ORCH_TENANTS_FILE": str(settings.tenants_file)})
    res = subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], env=env, capture_output=True, text=True,
                         timeout=60, cwd=Path(__file__).parents[2])
    assert res.returncode == 0, f"orchestrator {' '.join(args)} exited {res.returncode}: {res.stderr[-2000:]}"
    return res


def _dump(cluster: KubeCluster, node: RealNode, namespace: str, pod: str) -> None:
    """What a failing real-node test shows: the pod as the kubelet saw it, its logs, the node's daemons' logs."""
    if pod:
        print(cluster.kubectl("describe", "pod", "-n", namespace, pod, check=False).stdout[-4000:])
        print(cluster.kubectl("logs", "-n", namespace, pod, "--tail=80", check=False).stdout)
    print(node.dump_logs(6000))
