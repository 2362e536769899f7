"""Kubernetes runtime bench: trigger → pod created / Running next to a bare `kubectl apply` of the same pod,
reconcile passes over 100 and 500 pods (API calls, time), and the kube binaries' build time.

Runs its own control plane (etcd, kube-apiserver, scheduler, controller-manager, kwok with 3 nodes) and
livekit-server on loopback, and stops them at the end. Bounded: fixed counts, a hard deadline.
Usage: `scripts/bench-kube [--samples N] [--sizes 100,500]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import statistics
import subprocess
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import ContainerKey, ContainerStatus, Mode
from orchestrator.rules.naming import container_labels, container_name, spec_hash
from orchestrator.services.reconciler import Reconciler
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.kubernetes.objects import pod_manifest, pod_name
from orchestrator.runtime.kubernetes.runtime import KubernetesRuntime
from orchestrator.settings import Settings
from orchestrator.tenants.file_store import FileTenantStore
from orchestrator.services.trigger import TriggerService
from tests.conftest import CLIENT_ID, write_tenants
from devtools.kube_cluster import KubeCluster, kube_bin_dir, start_cluster
from devtools.livekit_server import LiveKitServer, free_port

from bench.scale import CountingLiveKit, ensure_rooms
from bench.stats import summary

RESULTS = Path("bench-results")
ROOT = Path(__file__).resolve().parents[1]


def build_times() -> dict[str, Any]:
    """The first build's time (recorded by scripts/build-kube) and a run now, with everything cached."""
    t0 = time.perf_counter()
    subprocess.run([str(ROOT / "scripts" / "build-kube")], check=True, capture_output=True)
    cached = time.perf_counter() - t0
    recorded = kube_bin_dir() / "build-seconds"
    return {"first_build_s": int(recorded.read_text()) if recorded.exists() else None, "cached_run_s": round(cached, 2)}


async def wait_running(runtime: KubernetesRuntime, name: str, *, timeout_s: float = 60) -> float:
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        info = await runtime.get(name)
        if info is not None and info.status is ContainerStatus.running:
            return time.perf_counter()
        await asyncio.sleep(0.02)
    raise TimeoutError(f"pod {name} not Running after {timeout_s} s")


async def latency(cluster: KubeCluster, settings: Settings, runtime: KubernetesRuntime, livekit: LiveKitGateway,
                  samples: int) -> dict[str, Any]:
    svc = TriggerService(settings=settings, tenants=FileTenantStore(settings.tenants_file), livekit=livekit, runtime=runtime)
    trig_created, trig_running, kc_created, kc_running = [], [], [], []
    for i in range(samples):
        t0 = time.perf_counter()
        result = await svc.trigger(client_id=CLIENT_ID, agent_slug="farah", mode=Mode.voice, user_id="bench", room_name=f"lat-{i}")
        trig_created.append(time.perf_counter() - t0)
        trig_running.append(await wait_running(runtime, result.container.name) - t0)

        # The baseline: the same Pod (same manifest rules, no Secret), applied by kubectl in the same run.
        spec = ContainerSpec(
            name=f"agent_bare_farah_lat-{i}", image=settings.agent_image, labels={"bench": "bare"}, env={"LIVEKIT_URL": "ws://x"},
            memory=settings.agent_memory, cpus=settings.agent_cpus, pids=64, network="host", restart_policy="on-failure",
            restart_max=3, stop_timeout_s=2,
        )
        manifest = pod_manifest(spec, namespace=runtime.namespace, secret="unused")
        t0 = time.perf_counter()
        subprocess.run(["kubectl", f"--kubeconfig={cluster.admin_kubeconfig}", "apply", "-f", "-"], input=yaml.safe_dump(manifest),
                       text=True, check=True, capture_output=True)
        kc_created.append(time.perf_counter() - t0)
        kc_running.append(await wait_running(runtime, pod_name(spec.name)) - t0)
    return {
        "trigger_to_pod_created": summary(trig_created), "kubectl_apply_to_pod_created": summary(kc_created),
        "trigger_to_running": summary(trig_running), "kubectl_apply_to_running": summary(kc_running),
    }


async def reconcile_scale(settings: Settings, runtime: KubernetesRuntime, sizes: list[int], passes: int) -> list[dict[str, Any]]:
    tenants = FileTenantStore(settings.tenants_file)
    tenant = await tenants.get_client(CLIENT_ID)
    agent = await tenants.get_agent(tenant, "farah")
    livekit = CountingLiveKit()
    launcher = TriggerService(settings=settings, tenants=tenants, livekit=livekit, runtime=runtime)
    reconciler = Reconciler(settings=settings, runtime=runtime, tenants=tenants, livekit=livekit, launcher=launcher)
    sem = asyncio.Semaphore(16)
    sh = spec_hash(agent, image=settings.agent_image, mode=Mode.voice)

    async def create(key: ContainerKey) -> None:
        labels = container_labels(key, agent=agent, mode=Mode.voice, scope=settings.scope, spec=sh, created_at=datetime.now(timezone.utc))
        spec = ContainerSpec(name=container_name(key), image=settings.agent_image, labels=labels, env={"LIVEKIT_TOKEN": "t"},
                             memory=settings.agent_memory, cpus=settings.agent_cpus, pids=64, network="host",
                             restart_policy="on-failure", restart_max=3, stop_timeout_s=2)
        async with sem:
            await runtime.create_and_start(spec)

    rows, have = [], 0
    try:
        for n in sorted(sizes):
            keys = [ContainerKey(client_id=CLIENT_ID, agent_slug="farah", room=f"rc-{i}") for i in range(have, n)]
            await ensure_rooms(livekit, tenant, agent, keys, settings)
            t0 = time.perf_counter()
            await asyncio.gather(*(create(k) for k in keys))
            create_s = time.perf_counter() - t0
            have = n
            times, calls, lk = [], {}, {}
            for _ in range(passes):
                runtime.calls.clear()
                livekit.calls.clear()
                report = await reconciler.run_once()
                times.append(report.duration_s)
                calls, lk = dict(runtime.calls), dict(livekit.calls)
                assert report.containers == n, (report.containers, n)
            rows.append({
                "n": n, "created_in_s": round(create_s, 1), "pass_median_ms": round(statistics.median(times) * 1000, 1),
                "pass_max_ms": round(max(times) * 1000, 1), "kube_calls_per_pass": calls, "livekit_calls_per_pass": lk,
                "actions": len(report.results),
            })
    finally:
        await livekit.aclose()
    return rows


def markdown(out: dict[str, Any]) -> str:
    lat, b = out["latency"], out["build"]
    lines = [
        "| measure | median ms | p90 ms | n |", "|---|---|---|---|",
        *(f"| {k.replace('_', ' ')} | {v['median_ms']} | {v['p90_ms']} | {v['n']} |" for k, v in lat.items()),
        "", "| pods | reconcile pass median ms | max ms | Kubernetes API calls per pass | LiveKit calls per pass | actions |",
        "|---|---|---|---|---|---|",
        *(f"| {r['n']} | {r['pass_median_ms']} | {r['pass_max_ms']} | {r['kube_calls_per_pass']} | {r['livekit_calls_per_pass']} | {r['actions']} |"
          for r in out["reconcile"]),
        "", f"kube binaries: first build {b['first_build_s']} s (recorded by scripts/build-kube), cached run {b['cached_run_s']} s",
    ]
    return "\n".join(lines)


async def main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"build": build_times()}
    cluster = start_cluster()
    lk = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port()).start()
    workdir = Path(tempfile.mkdtemp(prefix="bench-kube-"))
    try:
        scope = f"bench-{secrets.token_hex(3)}"
        cluster.create_namespace(f"agents-{scope}")
        settings = Settings(  # type: ignore[call-arg]
            runtime="kubernetes", scope=scope, tenants_file=write_tenants(workdir / "tenants.yaml", lk),
            kubeconfig=cluster.admin_kubeconfig, agent_memory="64m", agent_cpus=0.1, reconcile_enabled=False,
            max_agents_total=10_000, max_agents_per_client=10_000,
            # No agent joins under kwok and no human is in these rooms: keep startup/grace rules out of the passes.
            agent_startup_timeout_s=0, grace_period_s=3600, room_empty_timeout_s=3600,
        )
        runtime = KubernetesRuntime.from_settings(settings)
        livekit = LiveKitGateway()
        try:
            out["latency"] = await latency(cluster, settings, runtime, livekit, args.samples)
            for p in cluster.pods(runtime.namespace):  # start the scale section from zero pods
                await runtime.remove(p["metadata"]["name"])
            out["reconcile"] = await reconcile_scale(settings, runtime, [int(s) for s in args.sizes.split(",")], args.passes)
        finally:
            await livekit.aclose()
            await runtime.aclose()
    finally:
        lk.stop()
        cluster.stop()
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--sizes", default="100,500")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--deadline", type=int, default=900, help="hard limit in seconds for the whole run")
    args = parser.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("bench deadline reached")))
    signal.alarm(args.deadline)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(SystemExit("terminated")))  # still stop the cluster
    result = asyncio.run(main(args))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kube.json").write_text(json.dumps(result, indent=2))
    md = markdown(result)
    (RESULTS / "kube.md").write_text(md + "\n")
    print(md)
