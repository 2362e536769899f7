"""Soak: thousands of trigger → close cycles against a real `orchestrator serve`; its RSS as a curve, not one reading.

Every cycle uses a room never used before (the worst case for anything keyed by room: the room registry,
the view and its tombstones, webhook dedupe, caches), triggers an agent (a real tiny container on the real
engine, a real LiveKit room with webhooks to the server) and closes the room through the admin API; the
server's own reconciler removes the container and deletes the room. RSS of the server process is sampled
every `--every` cycles. The run is bounded by `--cycles` and `--deadline` and removes everything it made.

    python -m bench.soak --cycles 2000 --concurrency 8
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

from bench.run import RESULTS, Deadline, _alarm, remove_scope
from bench.scale import rss_mb
from devtools.world import CLIENT_ID, write_tenants
from devtools.docker_helpers import TINY_IMAGE
from devtools.livekit_server import LiveKitServer, free_port
from devtools.serve import serve_process


async def cycle(c: httpx.AsyncClient, url: str, room: str) -> bool:
    body = {"agent_slug": "farah", "room_name": room, "user_id": "soak", "client_id": CLIENT_ID}
    r = await c.post(f"{url}/api/v1/trigger-agent", json=body)
    if r.status_code not in (200, 201):
        return False
    closed = await c.post(f"{url}/api/v1/admin/rooms/{CLIENT_ID}/{room}/close")
    return closed.status_code < 300


async def soak(url: str, pid: int, *, cycles: int, concurrency: int, every: int, tag: str) -> dict[str, object]:
    samples: list[dict[str, float]] = [{"cycles": 0, "rss_mb": rss_mb(pid), "s": 0.0}]
    failures = 0
    t0 = time.monotonic()
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=concurrency)) as c:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> bool:
            async with gate:
                return await cycle(c, url, f"soak-{tag}-{i}")

        for start in range(0, cycles, every):
            results = await asyncio.gather(*(one(i) for i in range(start, min(start + every, cycles))))
            failures += results.count(False)
            samples.append({"cycles": min(start + every, cycles), "rss_mb": rss_mb(pid), "s": round(time.monotonic() - t0, 1)})
        live = await _drain(c, url)
    half = samples[len(samples) // 2:]
    slope = (half[-1]["rss_mb"] - half[0]["rss_mb"]) * 1000 / max(1.0, half[-1]["cycles"] - half[0]["cycles"])
    return {"cycles": cycles, "concurrency": concurrency, "failures": failures, "samples": samples,
            "rss_start_mb": samples[0]["rss_mb"], "rss_peak_mb": max(s["rss_mb"] for s in samples),
            "rss_end_mb": samples[-1]["rss_mb"], "second_half_mb_per_1000_cycles": round(slope, 2),
            "rooms_left_in_registry": live, "cycles_per_s": round(cycles / (time.monotonic() - t0), 1)}


async def _drain(c: httpx.AsyncClient, url: str, timeout_s: float = 120) -> int:
    """Wait for the server's reconciler to finish the last closes; returns the rooms it still tracks."""
    deadline = time.monotonic() + timeout_s
    while True:
        rooms = (await c.get(f"{url}/api/v1/admin/rooms")).json()["rooms"]
        if not rooms or time.monotonic() > deadline:
            return len(rooms)
        await asyncio.sleep(0.5)


def markdown(r: dict[str, object]) -> str:
    lines = [f"Soak: {r['cycles']} trigger → close cycles, concurrency {r['concurrency']}, {r['cycles_per_s']} cycles/s, "
             f"{r['failures']} failed; rooms still tracked after draining: {r['rooms_left_in_registry']}.", "",
             "| cycles | server RSS | elapsed |", "|---|---|---|"]
    lines += [f"| {s['cycles']} | {s['rss_mb']} MB | {s['s']} s |" for s in r["samples"]]  # type: ignore[union-attr]
    lines += ["", f"RSS {r['rss_start_mb']} → peak {r['rss_peak_mb']} → end {r['rss_end_mb']} MB; second half: "
              f"{r['second_half_mb_per_1000_cycles']} MB per 1,000 cycles (flat = within allocator noise, ~±2 MB)."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cycles", type=int, default=2000)
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--every", type=int, default=100, help="cycles between RSS samples")
    p.add_argument("--deadline", type=int, default=1800, help="hard limit in seconds")
    p.add_argument("--out", default=None, help="file stem under bench-results/ (default: print only)")
    args = p.parse_args(argv)
    tag = secrets.token_hex(3)
    scope = f"soak-{tag}"
    port = free_port()
    client = docker.from_env()
    livekit = LiveKitServer(api_key="soakkey", api_secret=secrets.token_hex(32), port=free_port(),
                            webhook_urls=[f"http://127.0.0.1:{port}/api/v1/livekit/webhook"]).start()
    tenants = write_tenants(Path(tempfile.mkdtemp()) / "tenants.yaml", livekit)
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(args.deadline)
    env = {"ORCH_MAX_AGENTS_PER_CLIENT": "1000", "ORCH_MAX_AGENTS_TOTAL": "1000", "ORCH_AGENT_STARTUP_TIMEOUT_S": "0",
           "ORCH_USAGE_SAMPLING_ENABLED": "false", "ORCH_LOG_LEVEL": "WARNING"}
    try:
        with serve_process(scope=scope, tenants_file=tenants, image=TINY_IMAGE, port=port, **env) as served:
            result = asyncio.run(soak(served.url, served.proc.pid, cycles=args.cycles, concurrency=args.concurrency,
                                      every=args.every, tag=tag))
    except Deadline:
        raise SystemExit(f"soak stopped at its deadline of {args.deadline} s") from None
    finally:
        signal.alarm(0)
        remove_scope(client, scope)
        livekit.stop()
    if args.out:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / f"{args.out}.json").write_text(json.dumps(result, indent=2) + "\n")
        (RESULTS / f"{args.out}.md").write_text(markdown(result) + "\n")
    print(markdown(result))


if __name__ == "__main__":
    main()
