"""Trigger latency and throughput vs a bare `docker run -d` of the same image, measured in one run."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker
import httpx

from orchestrator.naming import Label
from tests.conftest import CLIENT_ID, write_tenants
from tests.support.docker_helpers import TINY_IMAGE, remove_scope
from tests.support.livekit_server import LiveKitServer, free_port
from tests.support.serve import serve

RESULTS = Path("bench-results")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": round(statistics.median(values) * 1000, 1), "p90_ms": round(pct(values, 0.9) * 1000, 1), "n": len(values)}


@contextmanager
def orchestrator(*, scope: str, image: str, livekit: LiveKitServer) -> Iterator[str]:
    tenants = write_tenants(Path(tempfile.mkdtemp()) / "tenants.yaml", livekit)
    with serve(scope=scope, tenants_file=tenants, image=image) as url:
        yield url


def body(room: str) -> dict[str, str]:
    return {"agent_slug": "farah", "mode": "voice", "room_name": room, "user_id": "bench", "client_id": CLIENT_ID}


def bare_docker_run(client: docker.DockerClient, *, image: str, scope: str, i: int) -> float:
    """The physical baseline: create + start of the same image through the same SDK."""
    t0 = time.perf_counter()
    client.containers.run(image, detach=True, name=f"bench-bare-{scope}-{i}", labels={Label.SCOPE: scope},
                          mem_limit="64m", nano_cpus=200_000_000, network_mode="host")
    return time.perf_counter() - t0


def timed_post(c: httpx.Client, url: str, room: str) -> tuple[float, dict[str, object]]:
    t0 = time.perf_counter()
    r = c.post(f"{url}/api/v1/trigger-agent", json=body(room))
    return time.perf_counter() - t0, (r.json() if r.status_code == 200 else {"error": r.status_code})


async def burst(url: str, n: int, tag: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as c:
        t0 = time.perf_counter()
        rs = await asyncio.gather(*(c.post(f"{url}/api/v1/trigger-agent", json=body(f"burst-{tag}-{i}")) for i in range(n)),
                                  return_exceptions=True)
        wall = time.perf_counter() - t0
    ok = [r for r in rs if isinstance(r, httpx.Response) and r.status_code == 200]
    names = [r.json()["container_name"] for r in ok]
    return {"n": n, "wall_s": round(wall, 2), "containers_per_s": round(len(ok) / wall, 1),
            "errors": n - len(ok), "duplicates": len(names) - len(set(names))}


async def reuse_throughput(url: str, *, room: str, total: int, concurrency: int) -> float:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                (await c.post(f"{url}/api/v1/trigger-agent", json=body(room))).raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return total / (time.perf_counter() - t0)


def run(args: argparse.Namespace) -> dict[str, object]:
    client = docker.from_env()
    scope = f"bench-{secrets.token_hex(3)}"
    livekit = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port()).start()
    out: dict[str, object] = {"machine": f"{platform.node()} {os.cpu_count()} cores, {platform.platform()}",
                              "image": args.image, "runs": args.runs}
    try:
        with orchestrator(scope=scope, image=args.image, livekit=livekit) as url, httpx.Client(timeout=60) as c:
            timed_post(c, url, "warmup")
            bare_docker_run(client, image=args.image, scope=scope, i=-1)
            # Interleaved, so both see the same daemon load and the same number of running containers.
            bare, create, answers = [], [], []
            for i in range(args.runs):
                bare.append(bare_docker_run(client, image=args.image, scope=scope, i=i))
                t, a = timed_post(c, url, f"create-{i}")
                create.append(t)
                answers.append(a)
            reuse = [timed_post(c, url, "create-0")[0] for _ in range(args.runs * 5)]
            rps = asyncio.run(reuse_throughput(url, room="create-0", total=args.runs * 10, concurrency=10))
            remove_scope(client, scope)
            bursts = []
            for n in args.bursts:
                bursts.append(asyncio.run(burst(url, n, str(n))))
                remove_scope(client, scope)
        out["bare_docker_run"] = summary(bare)
        out["trigger_create"] = {**summary(create), "ratio_to_bare": round(statistics.median(create) / statistics.median(bare), 2),
                                 "errors": sum(1 for a in answers if "error" in a)}
        out["trigger_reuse"] = {**summary(reuse), "throughput_rps_c10": round(rps, 1)}
        out["bursts"] = bursts
    finally:
        remove_scope(client, scope)
        livekit.stop()
    return out


def markdown(r: dict[str, object]) -> str:
    b, c, u = r["bare_docker_run"], r["trigger_create"], r["trigger_reuse"]  # type: ignore[index]
    lines = [f"Machine: {r['machine']}; image `{r['image']}`; {r['runs']} runs per figure.", "",
             "| figure | median | p90 | baseline median | ratio |", "|---|---|---|---|---|",
             f"| bare `docker run -d` (SDK) | {b['median_ms']} ms | {b['p90_ms']} ms | — | 1.00 |",
             f"| trigger → container running (new) | {c['median_ms']} ms | {c['p90_ms']} ms | {b['median_ms']} ms | {c['ratio_to_bare']} |",
             f"| trigger on existing container (reuse) | {u['median_ms']} ms | {u['p90_ms']} ms | — | {u['throughput_rps_c10']} req/s at concurrency 10 |",
             "", "| burst (distinct rooms) | wall | containers/s | errors | duplicates |", "|---|---|---|---|---|"]
    lines += [f"| {x['n']} | {x['wall_s']} s | {x['containers_per_s']} | {x['errors']} | {x['duplicates']} |" for x in r["bursts"]]  # type: ignore[union-attr]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--image", default=TINY_IMAGE)
    p.add_argument("--bursts", type=int, nargs="*", default=[10, 50, 100])
    args = p.parse_args(argv)
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "latest.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
