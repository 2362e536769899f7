"""What tracing costs, and where a cold start spends its time: two served orchestrators in one run, tracing off and
tracing on (exporting to a real Jaeger), triggered in turn; cold starts of the real agent image until LiveKit's
webhook says it joined, then reuse answers. Per-stage medians come from each orchestrator's own timelines.

    .venv/bin/python -m bench.tracing --runs 8 --reuse 200
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path

import docker
import httpx

from bench.run import remove_scope
from bench.stats import summary
from devtools.agent_net import make_network, remove_network
from devtools.jaeger import running_jaeger
from devtools.livekit_server import LiveKitServer, free_port
from devtools.serve import serve_process
from devtools.world import CLIENT_ID, write_tenants

STAGES = ("tenant_lookup", "admission", "room_claim", "engine", "agent_joined")


def post(c: httpx.Client, url: str, room: str) -> float:
    t0 = time.perf_counter()
    r = c.post(f"{url}/api/v1/trigger-agent",
               json={"agent_slug": "farah", "mode": "voice", "room_name": room, "user_id": "bench", "client_id": CLIENT_ID})
    took = time.perf_counter() - t0
    r.raise_for_status()
    return took


def joined_starts(c: httpx.Client, url: str, rooms: set[str], *, timeout_s: float) -> list[dict]:
    """The cold starts of `rooms` once every one has its agent_joined stage closed (LiveKit's webhook)."""
    deadline = time.monotonic() + timeout_s
    while True:
        starts = [s for s in c.get(f"{url}/api/v1/starts", params={"limit": 200}).json()["starts"]
                  if s["room"] in rooms and s["launch"] == "cold"]
        done = [s for s in starts if any(m["stage"] == "agent_joined" and m["outcome"] == "ok" for m in s["stages"])]
        if len(done) == len(rooms) or time.monotonic() > deadline:
            return done
        time.sleep(0.2)


def stage_medians(starts: list[dict]) -> dict[str, float]:
    out = {}
    for stage in STAGES:
        values = [m["duration_s"] for s in starts for m in s["stages"] if m["stage"] == stage and m["duration_s"] is not None]
        if values:
            out[stage] = round(statistics.median(values) * 1000, 1)
    return out


def run(args: argparse.Namespace) -> dict[str, object]:
    client = docker.from_env()
    tag = secrets.token_hex(3)
    net = make_network(f"orch-bench-{tag}", scope=f"bench-{tag}-net")
    ports = {"off": free_port(), "on": free_port()}
    livekit = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=net.gateway,
                            webhook_urls=[f"http://127.0.0.1:{p}/api/v1/livekit/webhook" for p in ports.values()]).start()
    tenants = write_tenants(Path(tempfile.mkdtemp()) / "tenants.yaml", livekit)
    scopes = {mode: f"bench-{tag}-{mode}" for mode in ports}
    out: dict[str, object] = {"runs": args.runs, "reuse": args.reuse, "image": args.agent_image}
    try:
        with running_jaeger() as jaeger:
            common = {"ORCH_AGENT_NETWORK": net.name, "ORCH_AGENT_MEMORY": "256m", "ORCH_AGENT_CPUS": "1.0",
                      "ORCH_RECONCILE_ENABLED": "false", "ORCH_USAGE_SAMPLING_ENABLED": "false"}
            traced = {"OTEL_EXPORTER_OTLP_ENDPOINT": jaeger.otlp_http_endpoint, "OTEL_SERVICE_NAME": f"bench-{tag}"}
            with serve_process(scope=scopes["off"], tenants_file=tenants, image=args.agent_image, port=ports["off"], **common) as off, \
                 serve_process(scope=scopes["on"], tenants_file=tenants, image=args.agent_image, port=ports["on"],
                               **common, **traced) as on, httpx.Client(timeout=60) as c:
                urls = {"off": off.url, "on": on.url}
                for mode in urls:  # first requests pay imports and connection set-up: not a figure
                    post(c, urls[mode], f"warm-{mode}")
                cold: dict[str, list[float]] = {"off": [], "on": []}
                for i in range(args.runs):  # interleaved: both see the same load and the same number of agents
                    for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                        cold[mode].append(post(c, urls[mode], f"cold-{mode}-{i}"))
                starts = {mode: joined_starts(c, urls[mode], {f"cold-{mode}-{i}" for i in range(args.runs)}, timeout_s=90)
                          for mode in urls}
                reuse: dict[str, list[float]] = {"off": [], "on": []}
                for i in range(args.reuse):
                    for mode in ("off", "on") if i % 2 == 0 else ("on", "off"):
                        reuse[mode].append(post(c, urls[mode], f"cold-{mode}-0"))
            for mode in ("off", "on"):
                out[f"tracing_{mode}"] = {
                    "cold_trigger": summary(cold[mode]), "reuse_trigger": summary(reuse[mode]),
                    "cold_joined_n": len(starts[mode]), "stage_medians_ms": stage_medians(starts[mode]),
                }
            out["jaeger_traces"] = len(jaeger.traces(f"bench-{tag}", limit=1000))
    finally:
        for s in scopes.values():
            remove_scope(client, s)
        livekit.stop()
        remove_network(client, net.name)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=8, help="cold starts per orchestrator (the real agent image)")
    p.add_argument("--reuse", type=int, default=200, help="reuse triggers per orchestrator")
    p.add_argument("--agent-image", default="agent-orchestrator/agent:latest")
    args = p.parse_args()
    result = run(args)
    print(json.dumps(result, indent=2))
    Path("bench-results").mkdir(exist_ok=True)
    Path("bench-results/tracing.json").write_text(json.dumps(result, indent=2))
    os.sync()


if __name__ == "__main__":
    main()
