"""Kubernetes warm pool bench (kwok): claim → Pod adopted as its key's, one by one and paced at a claim rate, next
to a bare label patch of a Pod (one API call) in the same run.

"Adopted" = `claim_member` returned: the member carries the key's labels (the patch with its resourceVersion
precondition) and no other Pod serves the key (the check after it). Runs its own control plane with kwok nodes
and stops it at the end. The handover (pods/attach) needs a real kubelet: tests/kubernetes/test_kube_pool_real_node.py
prints trigger → agent listed, warm vs cold. Usage: `python -m bench.kube_pool [--claims 50] [--rate 45]`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

from orchestrator.runtime.kubernetes.pool import PooledKubernetesRuntime
from devtools.kube_cluster import start_cluster
from devtools.pool_specs import key_spec, member_spec

from bench.stats import pct

RESULTS = Path("bench-results")
WATCH_CACHE = os.environ.get("KUBE_POD_WATCH_CACHE", "1") == "1"  # the apiserver default; 0 reads pods from etcd


def ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": round(pct(values, 0.5) * 1000, 1), "p99_ms": round(pct(values, 0.99) * 1000, 1), "n": len(values)}


async def members(rt: PooledKubernetesRuntime, scope: str, n: int) -> list[Any]:
    """`n` idle members as the pool holds them in steady service: running, and listed by a sweep since (which gives
    each claim the member's current resourceVersion; a member claimed before its last status update is read again)."""
    made: list[Any] = []
    while len(made) < n:  # 10 at a time: kwok marks them Running within about a second
        made += await asyncio.gather(*(rt.create_member(member_spec(scope)) for _ in range(min(10, n - len(made)))))
    ids = {m.id for m in made}
    deadline = time.monotonic() + 120
    while True:
        listed = [info for info, record in await rt.list_members(scope=scope) if record is None and info.id in ids]
        if len(listed) == n and all(i.status.value == "running" for i in listed):
            return listed
        if time.monotonic() > deadline:
            raise TimeoutError(f"{sum(i.status.value == 'running' for i in listed)} of {n} members running after 120 s")
        await asyncio.sleep(0.5)


async def run(claims: int, rate: float) -> dict[str, Any]:
    cluster = start_cluster(pod_watch_cache=WATCH_CACHE)
    try:
        scope = f"bench-{secrets.token_hex(3)}"
        cluster.create_namespace(f"agents-{scope}")
        rt = PooledKubernetesRuntime(namespace=f"agents-{scope}", kubeconfig=cluster.admin_kubeconfig)
        try:
            pool = await members(rt, scope, claims * 2)
            one, paced, bare = [], [], []
            for i, m in enumerate(pool[:claims]):  # one by one
                spec = key_spec(scope, f"seq-{i}")
                t0 = time.perf_counter()
                await rt.claim_member(m, name=spec.name, labels=spec.labels)
                one.append(time.perf_counter() - t0)
                t0 = time.perf_counter()  # the baseline: one label patch of the same Pod, nothing else
                await rt._json("bare-patch", lambda c, p=m.name: c.patch_namespaced_pod(
                    p, rt.namespace, {"metadata": {"labels": {"bench": "1"}}}, _content_type="application/merge-patch+json",
                    _preload_content=False))
                bare.append(time.perf_counter() - t0)

            async def claim_at(i: int, m: Any, at: float) -> None:
                await asyncio.sleep(max(0.0, at - time.perf_counter()))
                spec = key_spec(scope, f"paced-{i}")
                t0 = time.perf_counter()
                await rt.claim_member(m, name=spec.name, labels=spec.labels)
                paced.append(time.perf_counter() - t0)

            start = time.perf_counter() + 0.1
            await asyncio.gather(*(claim_at(i, m, start + i / rate) for i, m in enumerate(pool[claims:])))
            return {"claim_one_by_one": ms(one), f"claim_at_{rate:g}_per_s": ms(paced), "bare_label_patch": ms(bare),
                    "api_calls": dict(rt.calls)}
        finally:
            await rt.aclose()
    finally:
        cluster.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--claims", type=int, default=50)
    parser.add_argument("--rate", type=float, default=45.0)
    args = parser.parse_args()
    out = asyncio.run(run(args.claims, args.rate))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "kube-pool.json").write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))
