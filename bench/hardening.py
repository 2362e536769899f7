"""What isolation costs: trigger → agent listed by LiveKit with the old spec (host network, Docker's default
capabilities, writable root) and with the hardened one (own network, nothing granted), interleaved in one run;
and what making an agent network costs (the price of a network per client).

    .venv/bin/python -m bench.hardening [--runs 10] [--networks 5]

Real parts only: two `orchestrator serve` processes on loopback, the shared engine, one livekit-server bound to
127.0.0.1 and the bench network's gateway. Everything it made is removed in `finally`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import signal
import tempfile
import time
from pathlib import Path

import docker
import httpx

from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label
from tests.conftest import CLIENT_ID, write_tenants
from devtools.agent_net import make_network, remove_network
from devtools.docker_helpers import TINY_IMAGE, scoped
from devtools.livekit_server import LiveKitServer, free_port
from devtools.serve import serve

from bench.joined import listed_at
from bench.stats import ratio, summary

IMAGE = "agent-orchestrator/agent:latest"
# Docker's default capability set: what every agent held before hardening.
DOCKER_DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP",
                       "SETPCAP", "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE"]


async def joined(*, arms: dict[str, str], key: str, creds: LiveKitCredentials, runs: int, tag: str) -> dict[str, object]:
    from orchestrator.livekit.client import LiveKitGateway

    gateway = LiveKitGateway()
    times: dict[str, list[float]] = {label: [] for label in arms}
    answers: dict[str, list[float]] = {label: [] for label in arms}
    try:
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {key}"}) as http:
            for i in range(-1, runs):  # run -1 warms both paths
                order = list(arms.items())
                k = i % len(order)  # rotate: no arm always runs right after another's removal
                for label, url in order[k:] + order[:k]:
                    room = f"{tag}-{label}-{i}"
                    t0 = time.perf_counter()
                    r = await http.post(f"{url}/api/v1/trigger-agent", json={
                        "agent_slug": "farah", "room_name": room, "user_id": "bench", "client_id": CLIENT_ID})
                    r.raise_for_status()
                    t_answer = time.perf_counter()
                    t1 = await listed_at(gateway, creds, room, timeout=30)
                    await asyncio.to_thread(docker.from_env().api.remove_container, r.json()["container_name"], force=True)
                    if i >= 0:
                        times[label].append(t1 - t0)
                        answers[label].append(t_answer - t0)
    finally:
        await gateway.aclose()
    return {**{label: {**summary(t), "of_which_trigger_answer": summary(answers[label])} for label, t in times.items()},
            **{f"ratio_{label}_to_before": ratio(t, times["before"]) for label, t in times.items() if label != "before"}}


def network_cost(client: docker.DockerClient, *, n: int, tag: str) -> dict[str, object]:
    """Creating an agent network (our code path: list subnets, create) next to a bare `docker run -d` of the tiny image
    on it, and on the host network (what attaching a container to a bridge costs the engine)."""
    create_s, run_s, host_s = [], [], []
    for i in range(n):
        t0 = time.perf_counter()
        c = client.containers.run(TINY_IMAGE, detach=True, labels={Label.SCOPE: f"bench-{tag}"}, network_mode="host")
        host_s.append(time.perf_counter() - t0)
        c.remove(force=True)
        t0 = time.perf_counter()
        net = make_network(f"orch-bench-{tag}-{i}", scope=f"bench-{tag}")
        create_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        c = client.containers.run(TINY_IMAGE, detach=True, labels={Label.SCOPE: f"bench-{tag}"}, network=net.name)
        run_s.append(time.perf_counter() - t0)
        c.remove(force=True)
        remove_network(client, net.name)
    return {"network_create": summary(create_s), "docker_run_on_it": summary(run_s), "docker_run_host_network": summary(host_s),
            "ratio_create_to_run": ratio(create_s, run_s), "ratio_run_on_it_to_host": ratio(run_s, host_s)}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--networks", type=int, default=5)
    p.add_argument("--deadline", type=int, default=300)
    args = p.parse_args()
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("bench deadline")))
    signal.alarm(args.deadline)
    client = docker.from_env()
    client.images.get(IMAGE)
    tag = secrets.token_hex(3)
    scopes = [f"bench-{tag}-before", f"bench-{tag}-after", f"bench-{tag}", f"bench-{tag}-spec"]
    net = make_network(f"orch-bench-{tag}", scope=f"bench-{tag}")
    lk = LiveKitServer(api_key="benchkey", api_secret=secrets.token_hex(32), port=free_port(), agent_gateway=net.gateway).start()
    key = secrets.token_hex(24)
    common = {"ORCH_ADMIN_API_KEY": key, "ORCH_AGENT_MEMORY": "512m", "ORCH_AGENT_CPUS": "1.0",
              "ORCH_RECONCILE_ENABLED": "false", "ORCH_USAGE_SAMPLING_ENABLED": "false"}
    loosened = {f"{CLIENT_ID}/farah": {"writable_root": True, "allow_new_privileges": True, "cap_add": DOCKER_DEFAULT_CAPS}}
    try:
        tenants = write_tenants(Path(tempfile.mkdtemp()) / "tenants.yaml", lk)
        creds = LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)
        # before: the old spec; spec_only: hardened spec, host network (what the spec itself costs); after: both.
        with serve(scope=scopes[0], tenants_file=tenants, image=IMAGE, ORCH_AGENT_NETWORK="host",
                   ORCH_AGENT_SECURITY_EXCEPTIONS=json.dumps(loosened), **common) as before, \
             serve(scope=scopes[3], tenants_file=tenants, image=IMAGE, ORCH_AGENT_NETWORK="host", **common) as spec_only, \
             serve(scope=scopes[1], tenants_file=tenants, image=IMAGE, ORCH_AGENT_NETWORK=net.name, **common) as after:
            arms = {"before": before, "spec_only": spec_only, "after": after}
            result = {"joined": asyncio.run(joined(arms=arms, key=key, creds=creds, runs=args.runs, tag=tag))}
        result["network"] = network_cost(client, n=args.networks, tag=tag)
        print(json.dumps(result, indent=2))
    finally:
        signal.alarm(0)
        for scope in scopes:
            for c in scoped(client, scope):
                c.remove(force=True)
        lk.stop()
        remove_network(client, net.name)
        for n in client.networks.list(filters={"label": f"{Label.SCOPE}=bench-{tag}"}):
            remove_network(client, n.name)


if __name__ == "__main__":
    main()
