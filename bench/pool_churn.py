"""The pool under a steady load and under agent crashes (real engine, real LiveKit, the real agent image).

steady: triggers at a fixed rate for a while, each room closed 10 s after its trigger (as short calls would): the
pool's hit rate and the trigger's answer time. crashes: a human in a call, the pool at rest (at its target, its
members loaded), the agent SIGKILLed, the time until a new agent is listed in the room (the reconciler's restart,
served from the pool), and where that time went.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime, timezone

import docker
import httpx

from devtools.agent_room import Participant
from orchestrator.core.models import LiveKitCredentials
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label

from bench.joined import IDENTITY
from bench.pool import pool_state, wait_idle
from bench.stats import summary

CLOSE_AFTER_S = 10.0


async def steady(http: httpx.AsyncClient, url: str, body: dict[str, str], scope: str, *, rate: float, seconds: float) -> dict[str, object]:
    before = (await pool_state(http, url))["claims"]
    answers: list[float] = []
    errors = close_errors = 0
    closes: set[asyncio.Task[None]] = set()

    async def close_later(client_id: str, room: str) -> None:
        nonlocal close_errors
        await asyncio.sleep(CLOSE_AFTER_S)
        try:
            await http.post(f"{url}/api/v1/admin/rooms/{client_id}/{room}/close")
        except httpx.TransportError:  # an overloaded server: counted, the rest of the run goes on
            close_errors += 1

    async def one(i: int) -> None:
        nonlocal errors
        room = f"{scope}-steady-{i}"
        t0 = time.perf_counter()
        try:
            r = await http.post(f"{url}/api/v1/trigger-agent", json={**body, "room_name": room})
        except httpx.TransportError:
            errors += 1
            return
        if r.status_code not in (200, 201):
            errors += 1
            return
        answers.append(time.perf_counter() - t0)
        task = asyncio.create_task(close_later(body["client_id"], room))
        closes.add(task)
        task.add_done_callback(closes.discard)

    n = int(rate * seconds)
    started = time.perf_counter()
    triggers = []
    for i in range(n):  # open loop: the next trigger leaves on schedule whatever the last one is doing
        await asyncio.sleep(max(0.0, started + i / rate - time.perf_counter()))
        triggers.append(asyncio.create_task(one(i)))
    await asyncio.gather(*triggers)
    await asyncio.gather(*closes)
    after = (await pool_state(http, url))["claims"]
    claims = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    return {"rate_per_s": rate, "seconds": seconds, "n": n, "errors": errors, "close_errors": close_errors, "claims": claims,
            "hit_rate": round(claims.get("warm", 0) / max(1, sum(claims.values())), 3), "trigger_answer": summary(answers)}


async def wait_rest(http: httpx.AsyncClient, url: str, *, client: docker.DockerClient, scope: str, timeout: float) -> None:
    """The pool at rest, as in steady service: every pool at its target, nothing being made, every idle member
    loaded (healthy: a member beats once Python, the rtc library and the agent are loaded and it waits)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pools = (await pool_state(http, url)).get("pools", [])
        if pools and all(p["idle"] >= p["target"] and p["creating"] == 0 for p in pools):
            rows = await asyncio.to_thread(client.api.containers, filters={"label": [f"{Label.SCOPE}={scope}", rules.POOL]})
            if all(rules.is_canonical(r["Names"][0].lstrip("/")) or "(healthy)" in r["Status"] for r in rows):
                return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"the pool at {url} did not come to rest in {timeout} s")


async def crashes(http: httpx.AsyncClient, url: str, body: dict[str, str], scope: str, *, client: docker.DockerClient,
                  creds: LiveKitCredentials, runs: int, pool_scope: str) -> dict[str, object]:
    """SIGKILL of the agent with a human in the call → a new agent listed in the room, `runs` times; and where that
    time went, from the server's own timeline of each restart (`GET /api/v1/starts`)."""
    gateway = LiveKitGateway()
    back: list[float] = []
    parts: dict[str, list[float]] = {}
    try:
        for i in range(runs):
            await wait_idle(http, url, 1, timeout=60)
            room = f"{scope}-crash-{i}"
            made = (await http.post(f"{url}/api/v1/trigger-agent", json={**body, "room_name": room, "mode": "voice"})).json()
            async with Participant(creds.url, made["user_token"]) as human:
                await human.track_from(IDENTITY, timeout=30)
                await wait_rest(http, url, client=client, scope=pool_scope, timeout=120)  # a crash in steady service
                old = {p.sid for p in await gateway.list_participants(creds, room=room) if p.identity == IDENTITY}
                await asyncio.to_thread(client.api.kill, made["container_name"], "SIGKILL")
                killed, killed_at = time.perf_counter(), datetime.now(timezone.utc)
                deadline = killed + 30
                while time.perf_counter() < deadline:
                    now = {p.sid for p in await gateway.list_participants(creds, room=room) if p.identity == IDENTITY}
                    if now - old:
                        back.append(time.perf_counter() - killed)
                        break
                    await asyncio.sleep(0.02)
            for name, seconds in (await restart_parts(http, url, room=room, killed_at=killed_at)).items():
                parts.setdefault(name, []).append(seconds)
            await http.post(f"{url}/api/v1/admin/rooms/{body['client_id']}/{room}/close")
    finally:
        await gateway.aclose()
    return {"runs": runs, "recovered": len(back), "back_in_room": summary(back),
            "parts": {name: summary(values) for name, values in parts.items()}}


async def restart_parts(http: httpx.AsyncClient, url: str, *, room: str, killed_at: datetime) -> dict[str, float]:
    """The kill → the restart's beginning (the death seen, a pass planned it, the dead container removed), then each
    stage of the restart as the server timed it; empty when the server has no restart for the room."""
    starts = (await http.get(f"{url}/api/v1/starts", params={"room": room, "limit": 5})).json()["starts"]
    restart = next((s for s in starts if s["kind"] == "restart"), None)
    if restart is None:
        return {}
    began = (datetime.fromisoformat(restart["started_at"]) - killed_at).total_seconds()
    return {"kill_to_restart_begun": began,
            **{m["stage"]: m["duration_s"] for m in restart["stages"] if m["duration_s"] is not None}}

