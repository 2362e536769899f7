"""Kubernetes on a real kubelet node: trigger → agent listed by LiveKit from a real pod, next to a bare
`kubectl apply` of the same Pod (and its Secret) measured in the same run, plus the node's start-up.

Runs its own control plane, one real node (devtools/kube_node.py) and a livekit-server its pods reach,
and tears them down at the end. Bounded: fixed counts, a hard deadline.
Usage: `.venv/bin/python -m bench.kube_real [--samples N]` (scripts/bench-kube runs it after the kwok bench).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from devtools.kube_node import LABEL, TAINT, RealNode
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import ContainerStatus, LiveKitCredentials, Mode
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.kubernetes.objects import pod_manifest, pod_name, secret_manifest
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID, write_tenants
from devtools.docker_helpers import TINY_IMAGE
from devtools.kube_cluster import KubeCluster, start_cluster
from devtools.livekit_server import LiveKitServer, free_port

from bench.stats import summary

RESULTS = Path("bench-results")
AGENT_IMAGE = "agent-orchestrator/agent:latest"


async def _until(probe: Any, *, timeout_s: float, what: str) -> float:
    """Poll `probe` (async, truthy when done) every 20 ms; the moment it held, or TimeoutError."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        if await probe():
            return time.perf_counter()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"{what} not within {timeout_s} s")


async def latency(cluster: KubeCluster, settings: Settings, runtime: KubernetesRuntime, creds: LiveKitCredentials,
                  samples: int) -> dict[str, Any]:
    livekit = LiveKitGateway()
    tenants = FileTenantStore(settings.tenants_file)
    svc = TriggerService(settings=settings, tenants=tenants, livekit=livekit, runtime=runtime)
    client = await tenants.get_client(CLIENT_ID)
    rows: dict[str, list[float]] = {k: [] for k in ("trigger_to_running", "trigger_to_agent_listed",
                                                     "kubectl_apply_to_running", "kubectl_apply_to_agent_listed")}

    async def running(name: str) -> bool:
        info = await runtime.get(name)
        return info is not None and info.status is ContainerStatus.running

    async def listed(room: str, identity: str) -> bool:
        return any(p.identity == identity for p in await livekit.list_participants(creds, room=room))

    try:
        for i in range(samples):
            room = f"{settings.scope}-t{i}"
            t0 = time.perf_counter()
            result = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="bench", room_name=room)
            name = result.container.name
            rows["trigger_to_running"].append(await _until(lambda: running(name), timeout_s=60, what="pod Running") - t0)
            rows["trigger_to_agent_listed"].append(await _until(lambda: listed(room, "agent-farah"), timeout_s=60, what="agent") - t0)

            # The baseline: the same Pod and Secret (same manifest rules, a token for its own room), applied by kubectl.
            bare_room = f"{settings.scope}-b{i}"
            triggered = cluster.api("GET", f"/api/v1/namespaces/{runtime.namespace}/pods/{name}")
            env = {e["name"]: e["value"] for e in triggered["spec"]["containers"][0]["env"] if "value" in e}
            await runtime.remove(name)
            env["LIVEKIT_ROOM"] = bare_room
            env["LIVEKIT_TOKEN"] = livekit.agent_token(client.livekit, slug="farah", name="Farah", room=bare_room, ttl_s=600,
                                                       client_id=CLIENT_ID)
            spec = ContainerSpec(
                name=f"agent_bare_farah_{bare_room}", image=settings.agent_image, labels={"bench": "bare"}, env=env,
                memory=settings.agent_memory, cpus=settings.agent_cpus, pids=64, network="", restart_policy="on-failure",
                restart_max=3, stop_timeout_s=2,
            )
            secret_name = f"{pod_name(spec.name)}-env"
            manifest = pod_manifest(spec, namespace=runtime.namespace, secret=secret_name,
                                    node_selector=settings.kube_node_selector, tolerations=[dict(t) for t in settings.kube_tolerations])
            secret = secret_manifest(spec, namespace=runtime.namespace, name=secret_name, owner_uid="00000000-0000-0000-0000-000000000000")
            assert secret is not None
            secret["metadata"].pop("ownerReferences")  # no uid to own it before the pod exists; deleted below
            await livekit.ensure_room(client.livekit, room=bare_room, metadata="", empty_timeout_s=300, departure_timeout_s=20)
            docs = yaml.safe_dump_all([secret, manifest])
            t0 = time.perf_counter()
            subprocess.run(["kubectl", f"--kubeconfig={cluster.admin_kubeconfig}", "apply", "-f", "-"], input=docs, text=True,
                           check=True, capture_output=True)
            bare = pod_name(spec.name)
            rows["kubectl_apply_to_running"].append(await _until(lambda: running(bare), timeout_s=60, what="bare pod Running") - t0)
            rows["kubectl_apply_to_agent_listed"].append(
                await _until(lambda: listed(bare_room, "agent-farah"), timeout_s=60, what="bare agent") - t0)
            await runtime.remove(bare)
            cluster._api("DELETE", f"/api/v1/namespaces/{runtime.namespace}/secrets/{secret_name}")
    finally:
        await livekit.aclose()
    return {k: summary(v) for k, v in rows.items()}


def markdown(out: dict[str, Any]) -> str:
    node = out["node"]
    return "\n".join([
        "Real kubelet node (devtools/kube_node.py): agent image, LiveKit on the host end of the node's veth.", "",
        "| measure | median ms | p90 ms | n |", "|---|---|---|---|",
        *(f"| {k.replace('_', ' ')} | {v['median_ms']} | {v['p90_ms']} | {v['n']} |" for k, v in out["latency"].items()),
        "", f"node: images imported {node['images_imported_s']:.1f} s, kubelet start → Ready {node['kubelet_to_ready_s']:.1f} s, "
        f"harness start → Ready {node['start_to_ready_s']:.1f} s",
    ])


async def main(args: argparse.Namespace) -> dict[str, Any]:
    cluster = start_cluster()
    node: RealNode | None = None
    lk: LiveKitServer | None = None
    try:
        node = RealNode(cluster=cluster, images=(AGENT_IMAGE, TINY_IMAGE), sandbox_image=f"docker.io/{TINY_IMAGE}").start()
        lk = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=node.host_ip).start()
        workdir = Path(tempfile.mkdtemp(prefix="bench-kube-real-"))
        scope = f"bench-{secrets.token_hex(3)}"
        cluster.create_namespace(f"agents-{scope}")
        settings = Settings(  # type: ignore[call-arg]
            runtime="kubernetes", scope=scope, tenants_file=write_tenants(workdir / "tenants.yaml", lk),
            kubeconfig=cluster.admin_kubeconfig, agent_image=AGENT_IMAGE, agent_memory="256m", agent_cpus=0.5,
            agent_livekit_url=f"ws://{node.host_ip}:{lk.port}", kube_node_selector={LABEL[0]: LABEL[1]},
            kube_tolerations=[{**TAINT, "operator": "Equal"}], reconcile_enabled=False,
        )
        runtime = KubernetesRuntime.from_settings(settings)
        creds = LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)
        try:
            lat = await latency(cluster, settings, runtime, creds, args.samples)
        finally:
            await runtime.aclose()
        return {"latency": lat, "node": dict(node.timings)}
    finally:
        if lk is not None:
            lk.stop()
        if node is not None:
            problems = node.stop()
            if problems:
                print(f"real node left traces: {problems}")
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=5)
    parser.add_argument("--deadline", type=int, default=600, help="hard limit in seconds for the whole run")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("bench deadline reached")))
    signal.alarm(args.deadline)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit("terminated")))  # still tear the node down
    result = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kube-real.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (RESULTS / "kube-real.md").write_text(md + "\n")
    print(md)
