"""Warm pool vs cold start vs a bare `docker run`, interleaved in one run (real agent image, real LiveKit).

Per run: a bare host-network `docker run -d` of the agent image → listed by LiveKit; a trigger on an orchestrator
without a pool (cold) → answered, → listed; a trigger on one with a pool (warm, after its pool has a member) →
answered, → listed. Then a burst of distinct rooms on the pooled one (rate, hit rate, duplicates), with the pool
sized by its adaptive rule (a first burst of the same size teaches it), and what an idle member costs in memory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from pathlib import Path

import docker
import httpx

from orchestrator.core.models import LiveKitCredentials
from orchestrator.livekit.client import LiveKitGateway
from orchestrator.rules import pool as rules
from orchestrator.rules.naming import Label

from devtools.serve import serve
from devtools.world import CLIENT_ID

from bench.joined import bare_run, listed_at, remove
from bench.stats import ratio, summary


async def pool_state(http: httpx.AsyncClient, url: str) -> dict:
    try:
        return (await http.get(f"{url}/api/v1/admin/pool")).json()
    except httpx.TransportError:  # a kept-alive connection the server closed as we reused it: once more, fresh
        return (await http.get(f"{url}/api/v1/admin/pool", headers={"Connection": "close"})).json()


async def wait_idle(http: httpx.AsyncClient, url: str, n: int, *, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = await pool_state(http, url)
        if sum(p["idle"] for p in state.get("pools", [])) >= n:
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"pool at {url} did not reach {n} idle members in {timeout} s")


async def timed_trigger(http: httpx.AsyncClient, url: str, body: dict[str, str], room: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    r = await http.post(f"{url}/api/v1/trigger-agent", json={**body, "room_name": room})
    r.raise_for_status()
    return time.perf_counter() - t0, r.json()["container_name"]


def idle_member_memory(client: docker.DockerClient, scope: str) -> list[int]:
    """Resident memory (bytes, cgroup usage minus page cache) of each idle member of `scope`."""
    out = []
    for c in client.containers.list(filters={"label": [f"{Label.SCOPE}={scope}", rules.POOL]}):
        if rules.is_canonical(c.name):
            continue
        s = client.api.stats(c.id, stream=False, one_shot=True)
        mem = s.get("memory_stats") or {}
        cache = (mem.get("stats") or {}).get("inactive_file", 0)
        out.append(int(mem.get("usage", 0)) - int(cache))
    return out


async def measure(*, cold_url: str, warm_url: str, client: docker.DockerClient, image: str, scope: str, warm_scope: str,
                  creds: LiveKitCredentials, runs: int, burst: int, pool_size: int, pool_min: int,
                  body: dict[str, str]) -> dict[str, object]:
    gateway = LiveKitGateway()
    bare_join, cold_ans, cold_join, warm_ans, warm_join = [], [], [], [], []
    try:
        async with httpx.AsyncClient(timeout=120) as http:
            # The pool knows its domain from the start (prewarm) and fills to its minimum; the runs begin there.
            await timed_trigger(http, warm_url, body, f"{scope}-seed")
            with contextlib.suppress(TimeoutError):
                await wait_idle(http, warm_url, pool_min, timeout=300)
            for i in range(-1, runs):  # run -1 warms every path
                room = f"{scope}-bare-{i}"
                t0 = time.perf_counter()
                name = await asyncio.to_thread(bare_run, client, image=image, scope=scope, room=room, creds=creds)
                t_join = await listed_at(gateway, creds, room, timeout=30)
                await asyncio.to_thread(remove, client, name)

                room = f"{scope}-cold-{i}"
                t1 = time.perf_counter()
                ans, name = await timed_trigger(http, cold_url, body, room)
                t1_join = await listed_at(gateway, creds, room, timeout=30)
                await asyncio.to_thread(remove, client, name)

                await wait_idle(http, warm_url, 1, timeout=60)
                room = f"{scope}-warm-{i}"
                t2 = time.perf_counter()
                wans, wname = await timed_trigger(http, warm_url, body, room)
                try:
                    t2_join = await listed_at(gateway, creds, room, timeout=30)
                except TimeoutError:
                    logs = await asyncio.to_thread(lambda: client.api.logs(wname, tail=30).decode(errors="replace"))
                    raise TimeoutError(f"warm agent {wname} not listed in {room}; its last lines:\n{logs}") from None
                await asyncio.to_thread(remove, client, wname)
                if i >= 0:
                    bare_join.append(t_join - t0)
                    cold_ans.append(ans)
                    cold_join.append(t1_join - t1)
                    warm_ans.append(wans)
                    warm_join.append(t2_join - t2)
            # The burst meets a pool sized by the adaptive rule: a first burst of the same size (a campaign's
            # first hour) teaches the pool its peak, its rooms are closed, the pool fills to its new target (up to
            # 5 minutes on 2 cores), and the second burst is the one measured.
            taught = None
            if pool_min < min(burst, pool_size):  # its rooms closed as soon as they are answered: 2 cores cannot
                # also run 100 cold agents while the pool makes 100 members
                taught = await _burst(http, warm_url, body, f"{scope}-first", burst, close=True)
            target = sum(p["target"] for p in (await pool_state(http, warm_url)).get("pools", []))
            with contextlib.suppress(TimeoutError):
                await wait_idle(http, warm_url, min(burst, target), timeout=600)
            state = await pool_state(http, warm_url)
            before, idle_at_burst = state["claims"], sum(p["idle"] for p in state.get("pools", []))
            memory = await asyncio.to_thread(idle_member_memory, client, warm_scope)
            burst_out = {**await _burst(http, warm_url, body, scope, burst), "idle_at_start": idle_at_burst,
                         "target_at_start": target, "pool_min": pool_min, "first_burst": taught}
            after = (await pool_state(http, warm_url))["claims"]
    finally:
        await gateway.aclose()
    warm_hits = {k: after.get(k, 0) - before.get(k, 0) for k in set(after) | set(before)}
    hits = warm_hits.get("warm", 0)
    return {
        "bare_docker_run_to_listed": summary(bare_join),
        "cold_trigger_answer": summary(cold_ans),
        "warm_trigger_answer": {**summary(warm_ans), "ratio_to_cold": ratio(warm_ans, cold_ans)},
        "cold_trigger_to_listed": {**summary(cold_join), "ratio_to_bare": ratio(cold_join, bare_join)},
        "warm_trigger_to_listed": {**summary(warm_join), "ratio_to_bare": ratio(warm_join, bare_join)},
        "burst": {**burst_out, "claims": warm_hits, "hit_rate": round(hits / max(1, sum(warm_hits.values())), 3)},
        "idle_member_memory_mib": [round(m / 2**20, 1) for m in memory],
    }


async def _burst(http: httpx.AsyncClient, url: str, body: dict[str, str], scope: str, n: int, *,
                 close: bool = False) -> dict[str, object]:
    """`n` triggers for distinct rooms at once; `close`: each room closed by the operator API once answered."""
    async def one(room: str) -> httpx.Response:
        r = await http.post(f"{url}/api/v1/trigger-agent", json={**body, "room_name": room}, timeout=600)
        if close and r.status_code in (200, 201):
            await http.post(f"{url}/api/v1/admin/rooms/{body['client_id']}/{room}/close", timeout=600)
        return r

    t0 = time.perf_counter()
    answers = await asyncio.gather(*(one(f"{scope}-burst-{i}") for i in range(n)))
    took = time.perf_counter() - t0
    ok = [a for a in answers if a.status_code in (200, 201)]
    ids = [a.json()["container_id"] for a in ok]
    return {"n": n, "seconds": round(took, 2), "per_s": round(len(ok) / took, 1), "errors": n - len(ok),
            "duplicates": len(ids) - len(set(ids))}


def run_section(args: argparse.Namespace, *, client: docker.DockerClient, tenants: Path, creds: LiveKitCredentials,
                scope: str) -> dict[str, object]:
    """Two servers, one without a pool (cold) and one with: latencies, a burst, a steady rate, crash restarts."""
    from bench import pool_churn

    client.images.get(args.agent_image)
    agent = {"ORCH_AGENT_MEMORY": "256m", "ORCH_AGENT_CPUS": "0.5", "ORCH_MAX_AGENTS_PER_CLIENT": "1000", "ORCH_MAX_AGENTS_TOTAL": "1000",
             **({"ORCH_AGENT_RUNTIME": args.pool_agent_runtime} if args.pool_agent_runtime else {})}
    size = str(args.pool_size)
    body = {"agent_slug": "farah", "mode": "voice", "user_id": "bench", "client_id": CLIENT_ID}
    try:
        with serve(scope=scope, tenants_file=tenants, image=args.agent_image, ORCH_POOL_MAX="0", **agent) as cold_url, \
             serve(scope=f"{scope}-warm", tenants_file=tenants, image=args.agent_image, ORCH_POOL_MAX=size,
                   ORCH_POOL_MIN=str(args.pool_min), ORCH_POOL_REFILL_CONCURRENCY="8", **agent) as warm_url:
            result = asyncio.run(measure(
                cold_url=cold_url, warm_url=warm_url, client=client, image=args.agent_image, scope=scope, warm_scope=f"{scope}-warm",
                creds=creds, runs=args.pool_runs, burst=args.pool_burst, pool_size=args.pool_size, pool_min=args.pool_min,
                body=body))

            async def churn() -> dict[str, object]:
                async with httpx.AsyncClient(timeout=120) as http:
                    rate, seconds = args.pool_steady
                    out: dict[str, object] = {}
                    if rate * seconds >= 1:  # `--pool-steady 0 0` and `--pool-crashes 0` leave a part out
                        out["steady"] = await pool_churn.steady(http, warm_url, body, scope, rate=rate, seconds=seconds)
                    if args.pool_crashes:
                        out["crashes"] = await pool_churn.crashes(http, warm_url, body, scope, client=client, creds=creds,
                                                                  runs=args.pool_crashes, pool_scope=f"{scope}-warm")
                    return out

            try:
                result.update(asyncio.run(churn()))
            except (httpx.HTTPError, TimeoutError) as exc:  # the latencies and the burst above still stand
                result["churn_error"] = f"{type(exc).__name__}: {exc}"
    finally:  # also after a failed run: the claim records outlive the servers
        for name in (f"{scope}", f"{scope}-warm"):
            for v in client.volumes.list(filters={"label": f"{Label.SCOPE}={name}"}):
                v.remove(force=True)  # the pool's claim records
    result["agent_runtime"] = args.pool_agent_runtime or "runc (the engine's default)"
    return result


def markdown(p: dict) -> list[str]:
    def ms(s: dict) -> str:
        return f"{s['median_ms']} / {s['p90_ms']} ms"

    b, st, cr = p["burst"], p.get("steady"), p.get("crashes")
    lines = [f"Agents' runtime (cold and warm): {p.get('agent_runtime', 'runc')}; the bare run: runc.", "",
             "| pool figure | p50 / p90 | same-run baseline |", "|---|---|---|",
             f"| cold trigger answered | {ms(p['cold_trigger_answer'])} | — |",
             f"| warm trigger answered | {ms(p['warm_trigger_answer'])} | {p['warm_trigger_answer']['ratio_to_cold']}× cold |",
             f"| bare `docker run` → listed | {ms(p['bare_docker_run_to_listed'])} | 1.00 |",
             f"| cold trigger → listed | {ms(p['cold_trigger_to_listed'])} | {p['cold_trigger_to_listed']['ratio_to_bare']}× bare |",
             f"| warm trigger → listed | {ms(p['warm_trigger_to_listed'])} | {p['warm_trigger_to_listed']['ratio_to_bare']}× bare |", "",
             f"Burst of {b['n']} distinct rooms ({b.get('idle_at_start', '?')} members idle at its start, the pool's target "
             f"{b.get('target_at_start', '?')} with ORCH_POOL_MIN={b.get('pool_min', '?')}): {b['per_s']} agents/s, {b['errors']} errors, "
             f"{b['duplicates']} duplicates, hit rate {b['hit_rate']} ({b['claims']}). Idle member memory (MiB): {p['idle_member_memory_mib']}."]
    if first := b.get("first_burst"):
        lines.append(f"The first burst of that size, which taught the pool its peak: {first['per_s']} agents/s, {first['errors']} errors, "
                     f"{first['duplicates']} duplicates.")
    if st:
        lines.append(f"Steady {st['rate_per_s']}/s for {st['seconds']} s (rooms closed 10 s after their trigger): hit rate "
                     f"{st['hit_rate']} ({st['claims']}), {st['errors']} errors, trigger answered {ms(st['trigger_answer'])}.")
    if cr:
        lines.append(f"Agent SIGKILLed in a call → a new agent listed in the room: {ms(cr['back_in_room'])} "
                     f"({cr['recovered']} of {cr['runs']} runs recovered within 30 s).")
        if parts := cr.get("parts"):
            lines.append("Where the restart's time went (the server's timelines, p50 / p90): "
                         + "; ".join(f"{name} {ms(s)}" for name, s in parts.items()) + ".")
    return lines
