"""Soak: thousands of trigger → close cycles against a real `orchestrator serve`; its RSS as a curve, not one reading.

Every cycle uses a room never used before (the worst case for anything keyed by room: the room registry,
the view and its tombstones, webhook dedupe, caches), triggers an agent (a real tiny container on the real
engine, a real LiveKit room with webhooks to the server) and closes the room through the admin API; the
server's own reconciler removes the container and deletes the room. RSS of the server process is sampled
every `--every` cycles; the curve after `--warmup` cycles is what must stay flat. The run is bounded by
`--cycles` and `--deadline`, writes its curve so far after every sample (a run stopped at its deadline
still leaves one), and removes everything it made.

    python -m bench.soak --cycles 2000 --concurrency 8
    python -m bench.soak --cycles 600 --tracemalloc   # the served process under tracemalloc: what grew, by site
    python -m bench.soak --cycles 600 --pool 4 --image agent-orchestrator/agent:latest   # with the warm pool
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import docker
import httpx

from bench.heap_diff import top_growth, type_growth
from bench.run import RESULTS, Deadline, _alarm, remove_scope
from orchestrator.rules.naming import Label
from bench.scale import rss_mb
from devtools.agent_net import remove_network
from devtools.world import CLIENT_ID, write_tenants
from devtools.docker_helpers import TINY_IMAGE
from devtools.livekit_server import LiveKitServer, free_port
from devtools.serve import serve_process
from devtools.traced_serve import PROBE, SNAPSHOT_DIR

Result = dict[str, object]


async def cycle(c: httpx.AsyncClient, url: str, room: str) -> str | None:
    """One trigger → close; None when both succeeded, else what failed (kept in the result: a failure is looked at)."""
    body = {"agent_slug": "farah", "room_name": room, "user_id": "soak", "client_id": CLIENT_ID}
    try:
        r = await c.post(f"{url}/api/v1/trigger-agent", json=body)
        if r.status_code not in (200, 201):
            return f"trigger {r.status_code}: {r.text[:200]}"
        closed = await c.post(f"{url}/api/v1/admin/rooms/{CLIENT_ID}/{room}/close")
    except httpx.TransportError as exc:  # e.g. a keep-alive connection the server closed as we reused it
        return f"transport: {type(exc).__name__}: {exc}"[:200]
    return None if closed.status_code < 300 else f"close {closed.status_code}: {closed.text[:200]}"


def summarize(samples: list[dict[str, float]], *, warmup: int) -> Result:
    """Start/end/spread of RSS after warm-up and its least-squares slope (MB per 1,000 cycles)."""
    after = [s for s in samples if s["cycles"] >= warmup]
    if not after:  # still warming up: nothing to judge yet
        return {"warmup_cycles": warmup, "rss_start_mb": samples[0]["rss_mb"], "rss_peak_mb": max(s["rss_mb"] for s in samples)}
    xs, ys = [s["cycles"] for s in after], [s["rss_mb"] for s in after]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var * 1000 if var else 0.0
    return {"warmup_cycles": warmup, "rss_after_warmup_mb": ys[0], "rss_end_mb": ys[-1],
            "rss_spread_after_warmup_mb": round(max(ys) - min(ys), 1), "slope_mb_per_1000_cycles": round(slope, 3),
            "rss_start_mb": samples[0]["rss_mb"], "rss_peak_mb": max(s["rss_mb"] for s in samples)}


class Snapshots:
    """Asks the traced server (devtools/traced_serve.py) for a tracemalloc snapshot and waits for its file."""

    def __init__(self, pid: int, directory: Path, *, by_type: bool) -> None:
        self.pid, self.dir, self.taken, self.by_type = pid, directory, 0, by_type

    async def take(self, timeout_s: float = 120) -> Path:
        path = self.dir / f"snap-{self.taken:03d}.{'json' if self.by_type else 'pickle'}"
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout_s
        while not path.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"no tracemalloc snapshot from pid {self.pid} after {timeout_s} s")
            await asyncio.sleep(0.2)
        self.taken += 1
        return path


async def soak(url: str, pid: int, *, cycles: int, concurrency: int, every: int, warmup: int, tag: str,
               snapshots: Snapshots | None, on_sample: Callable[[Result], None]) -> Result:
    samples: list[dict[str, float]] = [{"cycles": 0, "rss_mb": rss_mb(pid), "s": 0.0}]
    snaps: list[tuple[int, Path]] = []
    result: Result = {"cycles": 0, "cycles_asked": cycles, "concurrency": concurrency, "failures": 0, "samples": samples}
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as c:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> str | None:
            async with gate:
                return await cycle(c, url, f"soak-{tag}-{i}")

        for start in range(0, cycles, every):
            done = min(start + every, cycles)
            results = await asyncio.gather(*(one(i) for i in range(start, done)))
            failed = [why for why in results if why is not None]
            result["failures"] = int(result["failures"]) + len(failed)  # type: ignore[call-overload]
            result["failure_reasons"] = [*result.get("failure_reasons", []), *failed][-20:]  # type: ignore[list-item]
            await _settle(c, url)  # sample between phases, not mid-close: the reconciler has finished its work
            if snapshots is not None and done >= warmup:
                snaps.append((done, await snapshots.take()))
            samples.append({"cycles": done, "rss_mb": rss_mb(pid), "s": round(time.monotonic() - t0, 1)})
            result.update(cycles=done, cycles_per_s=round(done / (time.monotonic() - t0), 1), **summarize(samples, warmup=warmup))
            if (pool := (await c.get(f"{url}/api/v1/admin/pool")).json()).get("enabled"):
                result["pool_claims"] = pool.get("claims", {})  # warm | cold | handover-failed: was the pool used?
            on_sample(result)
        result["rooms_left_in_registry"] = await _settle(c, url)
    if len(snaps) >= 2:
        (first_at, first), (last_at, last) = snaps[0], snaps[-1]
        diff = type_growth if snapshots is not None and snapshots.by_type else top_growth
        result["heap_growth"] = diff(first, last, cycles=last_at - first_at)
    return result


async def _settle(c: httpx.AsyncClient, url: str, timeout_s: float = 120) -> int:
    """Wait for the server's reconciler to finish the last closes; returns the rooms it still tracks."""
    deadline = time.monotonic() + timeout_s
    while True:
        rooms = (await c.get(f"{url}/api/v1/admin/rooms")).json()["rooms"]
        if not rooms or time.monotonic() > deadline:
            return len(rooms)
        await asyncio.sleep(0.5)


def remove_leftovers(client: docker.DockerClient, scope: str) -> None:
    """What the served process made besides containers: its agents' network (and the host filter on its bridge)
    and, with the pool on, claim records (volumes)."""
    remove_scope(client, scope)
    label = f"{Label.SCOPE}={scope}"
    for net in client.networks.list(filters={"label": label}):
        remove_network(client, net.name)
    for vol in client.volumes.list(filters={"label": label}):
        with contextlib.suppress(docker.errors.APIError):
            vol.remove(force=True)


def markdown(r: Result, *, command: str) -> str:
    lines = [f"Soak: {r['cycles']} of {r['cycles_asked']} trigger → close cycles, concurrency {r['concurrency']}, "
             f"{r.get('cycles_per_s')} cycles/s, {r['failures']} failed; rooms still tracked after draining: "
             f"{r.get('rooms_left_in_registry', 'not drained')}.", "", f"    {command}", "",
             "| cycles | server RSS | elapsed |", "|---|---|---|"]
    lines += [f"| {s['cycles']} | {s['rss_mb']} MB | {s['s']} s |" for s in r["samples"]]  # type: ignore[union-attr]
    if r.get("failure_reasons"):
        lines += ["", "Failed cycles (the last 20): " + "; ".join(f"`{why}`" for why in r["failure_reasons"])]  # type: ignore[union-attr]
    if "rss_after_warmup_mb" in r:
        lines += ["", f"RSS at start {r['rss_start_mb']} MB; after {r['warmup_cycles']} warm-up cycles "
                  f"{r['rss_after_warmup_mb']} MB → end {r['rss_end_mb']} MB (spread after warm-up "
                  f"{r['rss_spread_after_warmup_mb']} MB, peak {r['rss_peak_mb']} MB); least-squares slope after "
                  f"warm-up: {r['slope_mb_per_1000_cycles']} MB per 1,000 cycles."]
    else:
        lines += ["", f"Still within the {r['warmup_cycles']} warm-up cycles: RSS at start {r['rss_start_mb']} MB, "
                  f"peak {r['rss_peak_mb']} MB."]
    if r.get("pool_claims"):
        lines += ["", f"Warm pool claims: {r['pool_claims']}."]
    if r.get("stopped"):
        lines += ["", f"**Stopped early:** {r['stopped']}"]
    if r.get("heap_growth"):
        lines += ["", "```", *r["heap_growth"], "```"]  # type: ignore[misc]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--every", type=int, default=100, help="cycles between RSS samples")
    p.add_argument("--warmup", type=int, default=500, help="cycles before the curve must be flat")
    p.add_argument("--deadline", type=int, default=1800, help="hard limit in seconds")
    p.add_argument("--pool", type=int, default=0, help="ORCH_POOL_MAX for the server (0: no warm pool)")
    p.add_argument("--image", default=TINY_IMAGE, help="agent image (the pool wants agent-orchestrator/agent:latest)")
    p.add_argument("--tracemalloc", action="store_true", help="serve under tracemalloc; print what grew after warm-up")
    p.add_argument("--types", action="store_true", help="count live objects by type after warm-up (cheap); print what grew")
    p.add_argument("--out", default=None, help="file stem under bench-results/ (default: print only)")
    args = p.parse_args(argv)
    command = "scripts/soak " + " ".join(argv if argv is not None else sys.argv[1:])
    tag = secrets.token_hex(3)
    scope = f"soak-{tag}"
    port = free_port()
    client = docker.from_env()
    livekit = LiveKitServer(api_key="soakkey", api_secret=secrets.token_hex(32), port=free_port(),
                            webhook_urls=[f"http://127.0.0.1:{port}/api/v1/livekit/webhook"]).start()
    work = Path(tempfile.mkdtemp(prefix="soak-"))
    tenants = write_tenants(work / "tenants.yaml", livekit)
    latest: Result = {}

    def save(result: Result) -> None:
        latest.clear()
        latest.update(result)
        if args.out:
            RESULTS.mkdir(exist_ok=True)
            (RESULTS / f"{args.out}.json").write_text(json.dumps({"command": command, **result}, indent=2) + "\n")
            (RESULTS / f"{args.out}.md").write_text(markdown(result, command=command) + "\n")

    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)  # a stopped soak still cleans up and keeps its curve so far
    signal.alarm(args.deadline)
    env = {"ORCH_MAX_AGENTS_PER_CLIENT": "1000", "ORCH_MAX_AGENTS_TOTAL": "1000", "ORCH_AGENT_STARTUP_TIMEOUT_S": "0",
           "ORCH_USAGE_SAMPLING_ENABLED": "false", "ORCH_LOG_LEVEL": "WARNING", "ORCH_POOL_MAX": str(args.pool)}
    probing = args.tracemalloc or args.types
    if probing:
        env.update({SNAPSHOT_DIR: str(work), PROBE: "types" if args.types else "tracemalloc"})
    module = "devtools.traced_serve" if probing else "orchestrator.cli"
    try:
        with serve_process(scope=scope, tenants_file=tenants, image=args.image, port=port, module=module,
                           ready_s=180 if probing else 30, **env) as served:
            snapshots = Snapshots(served.proc.pid, work, by_type=args.types) if probing else None
            result = asyncio.run(soak(served.url, served.proc.pid, cycles=args.cycles, concurrency=args.concurrency,
                                      every=args.every, warmup=args.warmup, tag=tag, snapshots=snapshots, on_sample=save))
    except Deadline:
        if not latest:
            raise SystemExit(f"soak stopped at its deadline of {args.deadline} s before its first sample") from None
        result = {**latest, "stopped": f"its deadline ({args.deadline} s) or a SIGTERM ended the run after {latest['cycles']} cycles"}
    finally:
        signal.alarm(0)
        remove_leftovers(client, scope)
        livekit.stop()
    save(result)
    print(markdown(result, command=command))


if __name__ == "__main__":
    main()
