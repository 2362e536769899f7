"""The bench: trigger latency, joined latency, bursts and reconcile cost, each next to a baseline from the same run.

Bounded: a hard deadline (--deadline, SIGALRM) aborts whatever runs, and every container any section
created is removed in `finally`, on success, failure or timeout alike.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import secrets
import statistics
import tempfile
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker
import httpx

from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label
from orchestrator.settings import Settings
from devtools.world import CLIENT_ID, write_tenants
from devtools.agent_net import make_network, remove_network
from devtools.docker_helpers import TINY_IMAGE
from devtools.livekit_server import LiveKitServer, free_port
from devtools.serve import serve, serve_process

from bench import joined, scale
from bench import pool as pool_bench
from bench import reuse as reuse_bench
from bench.stats import summary

RESULTS = Path("bench-results")


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
    return time.perf_counter() - t0, (r.json() if r.status_code in (200, 201) else {"error": r.status_code})


async def burst(url: str, n: int, tag: str) -> dict[str, object]:
    async with httpx.AsyncClient(timeout=120, limits=httpx.Limits(max_connections=n)) as c:
        t0 = time.perf_counter()
        rs = await asyncio.gather(*(c.post(f"{url}/api/v1/trigger-agent", json=body(f"burst-{tag}-{i}")) for i in range(n)),
                                  return_exceptions=True)
        wall = time.perf_counter() - t0
    ok = [r for r in rs if isinstance(r, httpx.Response) and r.status_code in (200, 201)]
    kinds = Counter(str(r.status_code) if isinstance(r, httpx.Response) else type(r).__name__ for r in rs if r not in ok)
    names = [r.json()["container_name"] for r in ok]
    return {"n": n, "wall_s": round(wall, 2), "containers_per_s": round(len(ok) / wall, 1),
            "errors": n - len(ok), "error_kinds": dict(kinds), "duplicates": len(names) - len(set(names))}


async def reuse_throughput(url: str, *, room: str, total: int, concurrency: int) -> float:
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=concurrency)) as c:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                (await c.post(f"{url}/api/v1/trigger-agent", json=body(room))).raise_for_status()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(total)))
        return total / (time.perf_counter() - t0)


def remove_scope(client: docker.DockerClient, scope: str) -> int:
    """Force-remove every container of `scope`, 8 at a time (500 one by one would take a minute)."""
    def one(c: docker.models.containers.Container) -> None:
        try:
            c.remove(force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as exc:  # 409: its removal is already under way (the server's own)
            if exc.status_code != 409:
                raise

    # Sparse: a full list inspects each container and fails on one removed meanwhile (a pool's members going).
    found = client.containers.list(all=True, sparse=True, filters={"label": f"{Label.SCOPE}={scope}"})
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, found))
    return len(found)


class Deadline(Exception):
    """The bench ran past --deadline: abort, clean up, and say so."""


def _alarm(signum: int, frame: object) -> None:
    raise Deadline("bench deadline reached")


def machine() -> str:
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown CPU")
    mem_gb = int(Path("/proc/meminfo").read_text().split()[1]) / 1024 / 1024
    engine = docker.from_env().version()
    return (f"{os.cpu_count()} cores ({model}), {mem_gb:.0f} GiB, {platform.platform()}, "
            f"Docker Engine {engine.get('Version')} (API {engine.get('ApiVersion')})")


def run(args: argparse.Namespace) -> dict[str, object]:
    client = docker.from_env(max_pool_size=16)
    tag = secrets.token_hex(3)
    scope, scope_join, scope_rc = f"bench-{tag}", f"bench-{tag}-join", f"bench-{tag}-rc"
    # Agents on a network of the bench's own (as a deployment's), LiveKit bound to its gateway too.
    net = make_network(f"orch-bench-{tag}", scope=f"bench-{tag}-net")
    os.environ["ORCH_AGENT_NETWORK"] = net.name  # every served orchestrator below inherits it
    livekit = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port(),
                            agent_gateway=net.gateway).start()
    creds = LiveKitCredentials(url=livekit.url, api_key=livekit.api_key, api_secret=livekit.api_secret)
    tenants = write_tenants(Path(tempfile.mkdtemp()) / "tenants.yaml", livekit)
    out: dict[str, object] = {"machine": machine(), "image": args.image, "agent_image": args.agent_image, "runs": args.runs,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "sections_s": {}}
    timings: dict[str, float] = out["sections_s"]  # type: ignore[assignment]
    t_start = time.monotonic()
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.deadline)
    try:
        if "trigger" in args.sections:
            t = time.monotonic()
            # Limits far above the largest burst: bursts measure duplicates and errors, not the 429 path (a drill does).
            limits = {"ORCH_MAX_AGENTS_PER_CLIENT": "1000", "ORCH_MAX_AGENTS_TOTAL": "1000"}
            with serve(scope=scope, tenants_file=tenants, image=args.image, **limits) as url, httpx.Client(timeout=60) as c:
                timed_post(c, url, "warmup")
                bare_docker_run(client, image=args.image, scope=scope, i=-1)
                # Interleaved, so both see the same daemon load and the same number of running containers.
                bare, create, answers = [], [], []
                for i in range(args.runs):
                    bare.append(bare_docker_run(client, image=args.image, scope=scope, i=i))
                    tt, a = timed_post(c, url, f"create-{i}")
                    create.append(tt)
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
            timings["trigger"] = round(time.monotonic() - t, 1)
        if "joined" in args.sections:
            t = time.monotonic()
            client.images.get(args.agent_image)  # built by scripts/build-images; missing = a failure, not a skip
            with serve(scope=scope_join, tenants_file=tenants, image=args.agent_image,
                       ORCH_AGENT_MEMORY="512m", ORCH_AGENT_CPUS="1.0") as url:
                out["joined"] = asyncio.run(joined.measure(
                    url=url, client=client, image=args.agent_image, scope=scope_join, creds=creds,
                    runs=args.join_runs, body=body("unused")))
            timings["joined"] = round(time.monotonic() - t, 1)
        if "pool" in args.sections:
            t = time.monotonic()
            out["pool"] = pool_bench.run_section(args, client=client, tenants=tenants, creds=creds, scope=f"bench-{tag}-pool")
            timings["pool"] = round(time.monotonic() - t, 1)
        if "reuse" in args.sections:
            t = time.monotonic()
            with serve(scope=f"{scope}-reuse", tenants_file=tenants, image=args.agent_image, ORCH_AGENT_MEMORY="256m") as url:
                out["reuse"] = asyncio.run(reuse_bench.measure(url=url, livekit_url=creds.url, body=body("unused"),
                                                         room=f"bench-{tag}-reuse", runs=args.runs * 5))
            timings["reuse"] = round(time.monotonic() - t, 1)
        if "reconcile" in args.sections:
            t = time.monotonic()
            env = {"ORCH_AGENT_STARTUP_TIMEOUT_S": "0", "ORCH_RECONCILE_INTERVAL_S": "3600",
                   "ORCH_USAGE_SAMPLING_ENABLED": "false"}
            settings = Settings(scope=scope_rc, tenants_file=tenants, agent_image=args.image, agent_startup_timeout_s=0,
                                reconcile_enabled=False)
            with serve_process(scope=scope_rc, tenants_file=tenants, image=args.image, **env) as served:
                httpx.post(f"{served.url}/api/v1/admin/reconcile", timeout=30).raise_for_status()
                out["reconcile"] = asyncio.run(scale.measure(
                    client=client, settings=settings, client_id=CLIENT_ID, image=args.image, sizes=args.sizes,
                    passes=args.passes, server_url=served.url, server_pid=served.proc.pid))
                t_rm = time.monotonic()
                removed = remove_scope(client, scope_rc)
                out["reconcile"]["removed"] = {"containers": removed, "seconds": round(time.monotonic() - t_rm, 1)}  # type: ignore[index]
            out["reconcile"]["simulated"] = asyncio.run(scale.simulated(settings=settings, client_id=CLIENT_ID, n=args.simulated))  # type: ignore[index]
            timings["reconcile"] = round(time.monotonic() - t, 1)
    except Deadline:
        out["aborted"] = f"deadline of {args.deadline} s reached; figures above are partial"
    finally:
        signal.alarm(0)
        for s in (scope, scope_join, scope_rc, f"{scope}-reuse", f"bench-{tag}-pool", f"bench-{tag}-pool-warm"):
            remove_scope(client, s)
        livekit.stop()
        os.environ.pop("ORCH_AGENT_NETWORK", None)
        try:
            remove_network(client, net.name)
        except docker.errors.APIError as exc:  # the figures are written all the same; the leftover is named
            # (Docker 20.10 can keep stale endpoints after mass removals under load: `docker network rm` works
            # again after the engine restarts.)
            out["leftover_network"] = f"{net.name}: {exc.explanation or exc}"
            print(f"bench: could not remove network {net.name}: {exc.explanation or exc}", file=sys.stderr)
    timings["total"] = round(time.monotonic() - t_start, 1)
    return out


def markdown(r: dict[str, object]) -> str:
    lines = [f"Machine: {r['machine']}.", f"Tiny image `{r['image']}`, agent image `{r['agent_image']}`; "
             f"section times (s): {r['sections_s']}.", ""]
    if r.get("aborted"):
        lines += [f"**{r['aborted']}**", ""]
    if "trigger_create" in r:
        b, c, u = r["bare_docker_run"], r["trigger_create"], r["trigger_reuse"]  # type: ignore[index]
        lines += [f"{r['runs']} runs per figure, interleaved with the baseline.", "",
                  "| figure | median | p90 | baseline median | ratio |", "|---|---|---|---|---|",
                  f"| bare `docker run -d` (SDK), tiny image | {b['median_ms']} ms | {b['p90_ms']} ms | — | 1.00 |",
                  f"| trigger → container running (new) | {c['median_ms']} ms | {c['p90_ms']} ms | {b['median_ms']} ms | {c['ratio_to_bare']} |",
                  f"| trigger on existing container (reuse) | {u['median_ms']} ms | {u['p90_ms']} ms | — | {u['throughput_rps_c10']} req/s at concurrency 10 |"]
    if "joined" in r:
        jb, jt = r["joined"]["bare_docker_run_to_listed"], r["joined"]["trigger_to_listed"]  # type: ignore[index]
        lines += [f"| bare `docker run -d` → agent listed by LiveKit, agent image | {jb['median_ms']} ms | {jb['p90_ms']} ms | — | 1.00 (of which `docker run`: {jb['of_which_docker_run']['median_ms']} ms) |",
                  f"| trigger → agent listed by LiveKit (ListParticipants) | {jt['median_ms']} ms | {jt['p90_ms']} ms | {jb['median_ms']} ms | {jt['ratio_to_bare']} (of which the trigger's answer: {jt['of_which_trigger_answer']['median_ms']} ms; n={jt['n']}) |"]
    if "bursts" in r:
        lines += ["", "| burst (distinct rooms) | wall | containers/s | errors | duplicates |", "|---|---|---|---|---|"]
        lines += [f"| {x['n']} | {x['wall_s']} s | {x['containers_per_s']} | {x['errors']} | {x['duplicates']} |" for x in r["bursts"]]  # type: ignore[union-attr]
    if "reconcile" in r:
        rc = r["reconcile"]  # type: ignore[index]
        lines += ["", "| managed containers | one pass (median) | max | per container | Docker API calls per pass | LiveKit calls per pass | actions | server's own pass | server RSS | setup: created at |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for p in rc["passes"]:
            calls = ", ".join(f"{k} ×{v}" for k, v in p["docker_calls_per_pass"].items())
            lk = ", ".join(f"{k} ×{v}" for k, v in p["livekit_calls_per_pass"].items())
            lines.append(f"| {p['n']} | {p['pass_median_ms']} ms | {p['pass_max_ms']} ms | {p['ms_per_container']} ms | "
                         f"{p['docker_calls_total']} ({calls}) | {lk} | {p['actions']} | {p['server_pass_ms']} ms | "
                         f"{p['server_rss_mb']} MB | {p['containers_per_s']} containers/s |")
        lines += ["", "| managed containers | listed, every room polled: time / Docker / LiveKit calls | view, rooms known from webhooks: time / Docker / LiveKit calls |",
                  "|---|---|---|"]
        for p in rc["passes"]:
            a, k = p["listed_rooms_unknown"], p["view_rooms_known"]
            lines.append(f"| {p['n']} | {a['median_ms']} ms / {a['docker_calls']} / {sum(a['livekit_calls'].values())} | "
                         f"{k['median_ms']} ms / {k['docker_calls']} / {sum(k['livekit_calls'].values())} |")
        if "simulated" in rc:
            sim = rc["simulated"]
            lines += ["", f"Simulated {sim['n']} agents (planner + view, no engine, rooms known): one pass {sim['median_ms']} ms median "
                      f"({sim['max_ms']} ms max), {sim['livekit_calls']} LiveKit calls."]
        g = rc.get("growth", {})
        lines += ["", f"Orchestrator RSS: {rc['rss_idle_mb']} MB idle, {rc['rss_with_max_mb']} MB with {rc['passes'][-1]['n']} managed containers. "
                  f"Pass time grew {g.get('time_ratio')}× for {g.get('n_ratio')}× the containers. "
                  f"Removing them took {rc.get('removed', {}).get('seconds')} s."]
    if "reuse" in r:
        lines += ["", *reuse_bench.markdown(r["reuse"])]  # type: ignore[arg-type]
    if "pool" in r:
        lines += ["", *pool_bench.markdown(r["pool"])]  # type: ignore[arg-type]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=20, help="trigger/bare runs (reuse: 5x, throughput: 10x this)")
    p.add_argument("--join-runs", type=int, default=10, help="trigger → joined runs with the real agent image")
    p.add_argument("--image", default=TINY_IMAGE)
    p.add_argument("--agent-image", default="agent-orchestrator/agent:latest")
    p.add_argument("--bursts", type=int, nargs="*", default=[10, 50, 100])
    p.add_argument("--sizes", type=int, nargs="*", default=[10, 100, 500], help="managed containers per reconcile step")
    p.add_argument("--passes", type=int, default=5, help="timed reconcile passes per size")
    p.add_argument("--simulated", type=int, default=5000, help="agents in the engine-free pass (planner + view)")
    p.add_argument("--sections", nargs="*", default=["trigger", "joined", "reuse", "reconcile"],
                   choices=["trigger", "joined", "reuse", "reconcile", "pool"])
    p.add_argument("--pool-runs", type=int, default=10, help="pool section: interleaved bare/cold/warm runs")
    p.add_argument("--pool-burst", type=int, default=100, help="pool section: distinct rooms in the burst")
    p.add_argument("--pool-size", type=int, default=100, help="pool section: ORCH_POOL_MAX of the pooled server")
    p.add_argument("--pool-min", type=int, default=2,
                   help="pool section: ORCH_POOL_MIN of the pooled server (below the burst: the adaptive rule sizes the "
                        "pool from a first burst of the same size; the size of the burst: a pool kept full by hand)")
    p.add_argument("--pool-steady", type=float, nargs=2, default=[5.0, 120.0], metavar=("RATE", "SECONDS"),
                   help="pool section: triggers per second for how long, each room closed 10 s later")
    p.add_argument("--pool-crashes", type=int, default=20, help="pool section: SIGKILLs of an agent in a call")
    p.add_argument("--pool-agent-runtime", default=None, metavar="RUNTIME",
                   help="pool section: ORCH_AGENT_RUNTIME of both servers' agents (e.g. runsc: the gVisor pool)")
    p.add_argument("--deadline", type=int, default=540, help="hard limit in seconds for the whole bench")
    p.add_argument("--out", default=None,
                   help="file stem under bench-results/ (e.g. `latest`, the committed results); default: a "
                        "timestamped file under the git-ignored bench-results/tmp/, so a run never dirties the tree")
    args = p.parse_args(argv)
    result = run(args)
    stem = RESULTS / args.out if args.out else RESULTS / "tmp" / time.strftime("run-%Y%m%dT%H%M%S")
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    stem.with_suffix(".md").write_text(markdown(result) + "\n")
    print(markdown(result))
    print(f"written to {stem}.json and {stem}.md", file=sys.stderr)
    if result.get("aborted"):
        raise SystemExit(3)


if __name__ == "__main__":
    main()
