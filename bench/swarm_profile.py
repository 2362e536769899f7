"""Swarm agent start, restricted profile next to the previous one, interleaved on one real 3-node swarm.

  previous:   the service spec as it was (node's host network, token in Env, no user/read-only/cap drop/log limits)
  restricted: the runtime's create_and_start today (the scope's overlay, non-root, read-only root, cap drop ALL,
              tmpfs, log limits, the token as a short-lived Docker secret handed over by the prelude)
  restricted_host_network: the same on the node's network, to tell the overlay's cost from the rest

Both measured from the create call to the agent listed by LiveKit (the trigger's own work around it is the same
for both), pairs interleaved so that machine load hits both alike.
Run: `.venv/bin/python -m bench.swarm_profile --runs 5` (root; ~3 min plus ~1 min setup). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import time
from collections.abc import Callable
from typing import Any

import docker

from orchestrator.core.models import ContainerStatus, LiveKitCredentials
from orchestrator.livekit.client import LiveKitGateway, agent_token
from orchestrator.rules.isolation import network_name
from orchestrator.rules.naming import Label, agent_identity
from orchestrator.runtime import ContainerSpec
from orchestrator.runtime.swarm.rules import current_task, service_spec, task_status
from orchestrator.runtime.swarm.runtime import SwarmRuntime
from devtools.agent_room import eventually
from devtools.swarm_cluster import SwarmCluster

from bench.stats import ratio, summary

AGENT_IMAGE = "agent-orchestrator/agent:latest"
AGENT_KIND = 4  # livekit ParticipantInfo.Kind.AGENT
PREVIOUS_ONLY = ("ReadOnly", "CapabilityDrop", "Mounts", "User", "Secrets", "Command")  # what the old spec lacked


def _env(creds: LiveKitCredentials, room: str) -> dict[str, str]:
    return {"LIVEKIT_URL": creds.url, "LIVEKIT_ROOM": room, "AGENT_MODE": "voice",
            "LIVEKIT_TOKEN": agent_token(creds, slug="farah", name="Farah", room=room, ttl_s=600),
            "AGENT_CONFIG": json.dumps({"id": "agent-farah", "slug": "farah", "name": "Farah"})}


async def _listed(gw: LiveKitGateway, creds: LiveKitCredentials, room: str) -> bool:
    people = await gw.list_participants(creds, room=room)
    return any(p.identity == agent_identity("farah") and p.kind == AGENT_KIND for p in people)


async def previous(rt: SwarmRuntime, gw: LiveKitGateway, creds: LiveKitCredentials, scope: str, room: str) -> float:
    body = service_spec(name=f"prev-{room}", image=AGENT_IMAGE, labels={Label.SCOPE: scope}, env=_env(creds, room),
                        memory="256m", cpus=0.5, pids=256, network="host", restart_policy="on-failure", restart_max=3,
                        restart_delay_s=1, stop_timeout_s=2, constraints=[], spread=None)
    for key in PREVIOUS_ONLY:
        body["TaskTemplate"]["ContainerSpec"].pop(key, None)
    body["TaskTemplate"].pop("LogDriver", None)
    api = rt.client.api
    t0 = time.perf_counter()
    sid = (await asyncio.to_thread(api.create_service, body["TaskTemplate"], name=body["Name"], labels=body["Labels"], mode=body["Mode"]))["ID"]

    async def running() -> bool:
        return task_status(current_task(await asyncio.to_thread(api.tasks, filters={"service": sid}))).status is ContainerStatus.running

    await eventually(running, timeout=90, what="the previous-profile task running", interval=0.02)
    await eventually(lambda: _listed(gw, creds, room), timeout=90, what="the previous-profile agent listed", interval=0.05)
    took = time.perf_counter() - t0
    await asyncio.to_thread(api.remove_service, sid)
    return took


async def restricted(rt: SwarmRuntime, gw: LiveKitGateway, creds: LiveKitCredentials, scope: str, room: str, network: str) -> float:
    spec = ContainerSpec(name=f"agent_bench_{room}", image=AGENT_IMAGE, labels={Label.SCOPE: scope, Label.MANAGED: "true"},
                         env=_env(creds, room), memory="256m", cpus=0.5, pids=256, network=network, restart_policy="on-failure",
                         restart_max=3, stop_timeout_s=2, user="10001:10001")
    t0 = time.perf_counter()
    info = await rt.create_and_start(spec)
    await eventually(lambda: _listed(gw, creds, room), timeout=90, what="the restricted agent listed", interval=0.05)
    took = time.perf_counter() - t0
    await rt.remove(info.id)
    return took


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    source = docker.from_env()
    with SwarmCluster(nodes=3) as swarm:
        swarm.load_images(source, [AGENT_IMAGE])
        lk = swarm.start_livekit()
        creds = LiveKitCredentials(url=lk.url, api_key=lk.api_key, api_secret=lk.api_secret)  # type: ignore[arg-type]
        scope = f"prof-{secrets.token_hex(3)}"
        rt = SwarmRuntime(base_url=swarm.nodes[0].url)
        gw = LiveKitGateway()
        try:
            started = time.perf_counter()
            net = await rt.ensure_network(network_name(configured="", scope=scope, client_id=None), labels={Label.SCOPE: scope},
                                          subnet=None, pool=["172.29.0.0/16"], prefix=24)
            made_s = time.perf_counter() - started
            runs: dict[str, list[float]] = {"previous": [], "restricted": [], "restricted_host_network": []}
            steps: list[tuple[str, Callable[[str], Any]]] = [
                ("previous", lambda room: previous(rt, gw, creds, scope, room)),
                ("restricted", lambda room: restricted(rt, gw, creds, scope, room, net.name)),
                # The same profile on the node's network: what the overlay itself costs, apart from the rest.
                ("restricted_host_network", lambda room: restricted(rt, gw, creds, scope, room, "host")),
            ]
            for i in range(args.runs):
                for kind, step in steps if i % 2 == 0 else reversed(steps):
                    room = f"{scope}-{kind[:3]}{kind[-1]}{i}"
                    await gw.ensure_room(creds, room=room, metadata="", empty_timeout_s=300, departure_timeout_s=20)
                    runs[kind].append(await step(room))
            return {
                "create_to_listed": {k: summary(v) for k, v in runs.items()},
                "ratio_restricted_to_previous": ratio(runs["restricted"], runs["previous"]),
                "overlay_created_once_ms": round(made_s * 1000, 1),
                "engine_calls_restricted": dict(rt.calls),
            }
        finally:
            await gw.aclose()
            rt.close()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=5, help="pairs (previous, restricted), order alternating")
    args = p.parse_args(argv)
    print(json.dumps(asyncio.run(main_async(args))))


if __name__ == "__main__":
    main()
