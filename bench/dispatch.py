"""LiveKit dispatch bench: CreateDispatch → agent listed next to trigger → agent listed (same run, interleaved,
real agent image), and bursts of 50 dispatches (distinct rooms, then one room): jobs/s accepted, duplicates.

    .venv/bin/python -m bench.dispatch [--runs 10] [--burst 50]

Bounded: fixed counts, a hard deadline (SIGALRM), and every container removed in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import signal
import tempfile
import time
from collections import Counter
from pathlib import Path

import docker
import httpx
from livekit import api

from orchestrator.livekit.client import LiveKitGateway
from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label
from tests.conftest import CLIENT_ID, write_tenants
from devtools.docker_helpers import TINY_IMAGE
from devtools.agent_net import make_network, remove_network
from devtools.livekit_server import LiveKitServer, free_port
from devtools.serve import serve

from bench.joined import listed_at, remove
from bench.run import Deadline, _alarm, machine, remove_scope
from bench.run import burst as trigger_burst
from bench.stats import ratio, summary

RESULTS = Path("bench-results")
META = json.dumps({"client_id": CLIENT_ID})
DISPATCH_ENV = {"ORCH_DISPATCH_ENABLED": "true", "ORCH_DISPATCH_STATUS_INTERVAL_S": "0.5",
                "ORCH_MAX_AGENTS_PER_CLIENT": "1000", "ORCH_MAX_AGENTS_TOTAL": "1000", "ORCH_MAX_AGENTS_PER_ROOM": "10",
                "ORCH_RECONCILE_ENABLED": "false"}


async def registered(http: httpx.AsyncClient, url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        rows = (await http.get(f"{url}/api/v1/admin/dispatch")).json()["registrations"]
        if rows and all(r["state"] == "registered" for r in rows):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError("the orchestrator did not register with LiveKit within 30 s")


async def latency(*, url: str, lk: LiveKitServer, client: docker.DockerClient, runs: int, tag: str) -> dict[str, object]:
    """Interleaved: trigger-agent then CreateDispatch, each into a fresh room, until LiveKit lists the agent."""
    creds = LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)
    gateway = LiveKitGateway()
    lkapi = api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret)
    trig, disp = [], []
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await registered(http, url)
            for i in range(-1, runs):  # run -1 warms both paths
                room = f"bench-trig-{tag}-{i}"
                t0 = time.perf_counter()
                r = await http.post(f"{url}/api/v1/trigger-agent", json={
                    "agent_slug": "farah", "mode": "voice", "room_name": room, "user_id": "bench", "client_id": CLIENT_ID})
                r.raise_for_status()
                t_trig = await listed_at(gateway, creds, room, timeout=30) - t0
                await asyncio.to_thread(remove, client, r.json()["container_name"])

                room = f"bench-disp-{tag}-{i}"
                t0 = time.perf_counter()
                await lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=room, metadata=META))
                t_disp = await listed_at(gateway, creds, room, timeout=30) - t0
                for c in await asyncio.to_thread(client.api.containers, all=True, filters={"label": f"{Label.ROOM}={room}"}):
                    await asyncio.to_thread(remove, client, c["Id"])
                if i >= 0:
                    trig.append(t_trig)
                    disp.append(t_disp)
    finally:
        await gateway.aclose()
        await lkapi.aclose()
    return {"trigger_to_listed": summary(trig), "dispatch_to_listed": {**summary(disp), "ratio_to_trigger": ratio(disp, trig)}}


async def burst(*, url: str, lk: LiveKitServer, client: docker.DockerClient, scope: str, n: int, rooms: list[str]) -> dict[str, object]:
    """n CreateDispatch calls at once (over `rooms`); done when every room's container runs and LiveKit answered all."""
    lkapi = api.LiveKitAPI(lk.http_url, lk.api_key, lk.api_secret)
    want = set(rooms)
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await registered(http, url)
            t0 = time.perf_counter()
            results = await asyncio.gather(*(
                lkapi.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(agent_name="farah", room=rooms[i % len(rooms)], metadata=META))
                for i in range(n)), return_exceptions=True)
            deadline = time.monotonic() + 60
            while True:
                rows = await asyncio.to_thread(client.api.containers, all=True, filters={"label": f"{Label.SCOPE}={scope}"})
                running = {r["Labels"].get(Label.ROOM) for r in rows if r["State"] == "running"}
                if want <= running or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.02)
            wall = time.perf_counter() - t0
            await asyncio.sleep(1.0)  # late duplicates would show up here: look once more after a second
            rows = await asyncio.to_thread(client.api.containers, all=True, filters={"label": f"{Label.SCOPE}={scope}"})
    finally:
        await lkapi.aclose()
    per_key = Counter((r["Labels"].get(Label.ROOM), r["Labels"].get(Label.AGENT_SLUG)) for r in rows)
    return {"dispatches": n, "rooms": len(want), "wall_s": round(wall, 2), "jobs_per_s": round(len(want & running) / wall, 1),
            "containers": len(rows), "missing": len(want - running), "duplicates": sum(v - 1 for v in per_key.values()),
            "create_dispatch_errors": sum(isinstance(r, Exception) for r in results)}


def run(args: argparse.Namespace) -> dict[str, object]:
    client = docker.from_env(max_pool_size=16)
    tag = secrets.token_hex(3)
    scope_lat, scope_burst = f"bench-{tag}-dlat", f"bench-{tag}-dburst"
    # Agents on a network of the bench's own (as a deployment's), LiveKit bound to its gateway too (as bench/run.py).
    net = make_network(f"orch-bench-{tag}", scope=f"bench-{tag}-net")
    os.environ["ORCH_AGENT_NETWORK"] = net.name  # every served orchestrator below inherits it
    lk = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port(),
                       agent_gateway=net.gateway).start()
    tenants = write_tenants(Path(tempfile.mkdtemp()) / "tenants.yaml", lk)
    # One client on this server (write_tenants adds a second tenant sharing it; dispatch would then need the
    # client named in the room/dispatch metadata, which META does) — serve only the first.
    env = {**DISPATCH_ENV, "ORCH_DISPATCH_CLIENTS": json.dumps([CLIENT_ID])}
    out: dict[str, object] = {"machine": machine(), "agent_image": args.agent_image, "runs": args.runs,
                              "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.deadline)
    try:
        client.images.get(args.agent_image)
        with serve(scope=scope_lat, tenants_file=tenants, image=args.agent_image, ORCH_AGENT_MEMORY="512m", ORCH_AGENT_CPUS="1.0", **env) as url:
            out["latency"] = asyncio.run(latency(url=url, lk=lk, client=client, runs=args.runs, tag=tag))
        remove_scope(client, scope_lat)
        with serve(scope=scope_burst, tenants_file=tenants, image=TINY_IMAGE, **env) as url:
            out["burst_distinct_rooms"] = asyncio.run(burst(url=url, lk=lk, client=client, scope=scope_burst, n=args.burst,
                                                            rooms=[f"bench-b-{tag}-{i}" for i in range(args.burst)]))
            remove_scope(client, scope_burst)
            # The baseline from the same server and minute: the same number of trigger-agent calls at once.
            out["burst_trigger_baseline"] = asyncio.run(trigger_burst(url, args.burst, tag))
            remove_scope(client, scope_burst)
            out["burst_one_room"] = asyncio.run(burst(url=url, lk=lk, client=client, scope=scope_burst, n=args.burst,
                                                      rooms=[f"bench-one-{tag}"]))
    except Deadline:
        out["aborted"] = f"deadline of {args.deadline} s reached; figures above are partial"
    finally:
        signal.alarm(0)
        for s in (scope_lat, scope_burst):
            remove_scope(client, s)
        lk.stop()
        remove_network(client, net.name)
    return out


def markdown(r: dict[str, object]) -> str:
    lines = [f"Machine: {r['machine']}. Agent image `{r['agent_image']}` for latency; tiny image for bursts.", ""]
    if r.get("aborted"):
        lines += [f"**{r['aborted']}**", ""]
    if "latency" in r:
        t, d = r["latency"]["trigger_to_listed"], r["latency"]["dispatch_to_listed"]  # type: ignore[index]
        lines += [f"{r['runs']} runs each, interleaved.", "", "| figure | median | p90 | ratio |", "|---|---|---|---|",
                  f"| trigger-agent → agent listed by LiveKit (baseline) | {t['median_ms']} ms | {t['p90_ms']} ms | 1.00 |",
                  f"| CreateDispatch → agent listed by LiveKit | {d['median_ms']} ms | {d['p90_ms']} ms | {d['ratio_to_trigger']} |"]
    bursts = [(k, r[k]) for k in ("burst_distinct_rooms", "burst_one_room") if k in r]
    if bursts:
        lines += ["", "| burst | dispatches | rooms | wall | jobs/s accepted (container running) | containers | missing | duplicates | CreateDispatch errors |",
                  "|---|---|---|---|---|---|---|---|---|"]
        lines += [f"| {k.replace('burst_', '').replace('_', ' ')} | {b['dispatches']} | {b['rooms']} | {b['wall_s']} s | {b['jobs_per_s']} | "  # type: ignore[index]
                  f"{b['containers']} | {b['missing']} | {b['duplicates']} | {b['create_dispatch_errors']} |" for k, b in bursts]  # type: ignore[index]
    if "burst_trigger_baseline" in r:
        b = r["burst_trigger_baseline"]  # type: ignore[index]
        lines += [f"| baseline: {b['n']} trigger-agent calls at once, distinct rooms | {b['n']} | {b['n']} | {b['wall_s']} s | "  # type: ignore[index]
                  f"{b['containers_per_s']} | — | — | {b['duplicates']} | {b['errors']} (HTTP errors) |"]  # type: ignore[index]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--burst", type=int, default=50)
    p.add_argument("--agent-image", default="agent-orchestrator/agent:latest")
    p.add_argument("--deadline", type=int, default=300, help="hard limit in seconds")
    p.add_argument("--out", default="dispatch", help="file stem under bench-results/")
    args = p.parse_args(argv)
    result = run(args)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
    (RESULTS / f"{args.out}.md").write_text(markdown(result) + "\n")
    print(markdown(result))
    if result.get("aborted"):
        raise SystemExit(3)


if __name__ == "__main__":
    main()
