"""Trigger → agent listed in its LiveKit room (real agent image) vs `docker run -d` → listed, interleaved."""

from __future__ import annotations

import asyncio
import json
import time

import docker
import httpx

from orchestrator.core.errors import OrchestratorError
from orchestrator.livekit.client import LiveKitGateway, agent_token
from orchestrator.core.models import LiveKitCredentials
from orchestrator.rules.naming import Label

from bench.stats import ratio, summary

AGENT = {"id": "agent-farah", "slug": "farah", "name": "Farah", "greeting": "Hi, Farah here."}
IDENTITY = "agent-farah"


async def listed_at(gateway: LiveKitGateway, creds: LiveKitCredentials, room: str, *, timeout: float) -> float:
    """perf_counter time at which LiveKit first lists the agent in `room` (ListParticipants every 20 ms)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        try:
            if any(p.identity == IDENTITY for p in await gateway.list_participants(creds, room=room)):
                return time.perf_counter()
        except OrchestratorError:
            pass  # the room does not exist yet (the bare agent creates it when it connects)
        await asyncio.sleep(0.02)
    raise TimeoutError(f"agent not listed in room {room} within {timeout} s")


def bare_run(client: docker.DockerClient, *, image: str, scope: str, room: str, creds: LiveKitCredentials) -> str:
    """The baseline: the same image with the same environment the orchestrator gives it, via the same SDK."""
    env = {
        "LIVEKIT_URL": creds.url, "LIVEKIT_ROOM": room,
        "LIVEKIT_TOKEN": agent_token(creds, slug="farah", name="Farah", room=room, ttl_s=600),
        "AGENT_MODE": "voice", "AGENT_CONFIG": json.dumps(AGENT), "AGENT_GRACE_SECONDS": "60",
    }
    c = client.containers.run(image, detach=True, name=f"bench-bare-{room}", environment=env, labels={Label.SCOPE: scope},
                              network_mode="host", init=True, mem_limit="512m", nano_cpus=1_000_000_000)
    return c.name


def remove(client: docker.DockerClient, name: str) -> None:
    try:
        client.api.remove_container(name, force=True)
    except docker.errors.NotFound:
        pass


async def measure(*, url: str, client: docker.DockerClient, image: str, scope: str, creds: LiveKitCredentials,
                  runs: int, body: dict[str, str]) -> dict[str, object]:
    gateway = LiveKitGateway()
    bare_run_s, bare_join_s, trig_run_s, trig_join_s = [], [], [], []
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            for i in range(-1, runs):  # run -1 warms both paths (page cache, LiveKit, the image's .pyc)
                room = f"{scope}-bare-{i}"
                t0 = time.perf_counter()
                name = await asyncio.to_thread(bare_run, client, image=image, scope=scope, room=room, creds=creds)
                t_run = time.perf_counter()
                t_join = await listed_at(gateway, creds, room, timeout=30)
                await asyncio.to_thread(remove, client, name)

                room = f"{scope}-trig-{i}"
                t1 = time.perf_counter()
                r = await http.post(f"{url}/api/v1/trigger-agent", json={**body, "room_name": room})
                r.raise_for_status()
                t1_run = time.perf_counter()
                t1_join = await listed_at(gateway, creds, room, timeout=30)
                await asyncio.to_thread(remove, client, r.json()["container_name"])
                if i >= 0:
                    bare_run_s.append(t_run - t0)
                    bare_join_s.append(t_join - t0)
                    trig_run_s.append(t1_run - t1)
                    trig_join_s.append(t1_join - t1)
    finally:
        await gateway.aclose()
    return {
        "bare_docker_run_to_listed": {**summary(bare_join_s), "of_which_docker_run": summary(bare_run_s)},
        "trigger_to_listed": {**summary(trig_join_s), "of_which_trigger_answer": summary(trig_run_s),
                              "ratio_to_bare": ratio(trig_join_s, bare_join_s)},
    }
