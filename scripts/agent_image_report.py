"""Measure the agent image: size, and docker start → joined the room / listed by LiveKit (median, p90)."""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path

import docker

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from orchestrator.livekit.client import LiveKitGateway, agent_token  # noqa: E402
from orchestrator.core.models import LiveKitCredentials  # noqa: E402
from orchestrator.rules.naming import Label  # noqa: E402
from devtools.livekit_server import LiveKitServer, free_port  # noqa: E402

JOINED = b"joined the room"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def wait_for_line(container: docker.models.containers.Container, needle: bytes, *, timeout: float) -> float | None:
    """Wall time at which `needle` first shows in the container's log, or None after `timeout`."""
    found: list[float] = []

    def follow() -> None:
        buf = b""
        for chunk in container.logs(stream=True, follow=True):
            buf += chunk
            if needle in buf:
                found.append(time.monotonic())
                return

    t = threading.Thread(target=follow, daemon=True)
    t.start()
    t.join(timeout)
    return found[0] if found else None


async def listed(creds: LiveKitCredentials, room: str, identity: str, *, timeout: float) -> float | None:
    gateway = LiveKitGateway()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if any(p.identity == identity for p in await gateway.list_participants(creds, room=room)):
                return time.monotonic()
            await asyncio.sleep(0.02)
    finally:
        await gateway.aclose()
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--image", default="agent-orchestrator/agent:latest")
    parser.add_argument("--mode", default="voice", choices=["voice", "text"])
    args = parser.parse_args()

    client = docker.from_env()
    image = client.images.get(args.image)
    labels = image.labels or {}
    print(f"image           {args.image}  id {image.short_id}  input-hash {labels.get('input-hash', '-')}")
    print(f"size            {image.attrs['Size'] / 1e6:.0f} MB ({len(image.history())} layers)")

    scope = f"report-{secrets.token_hex(4)}"
    server = LiveKitServer(api_key="report", api_secret=secrets.token_hex(32), port=free_port()).start()
    creds = LiveKitCredentials(url=server.url, api_key=server.api_key, api_secret=server.api_secret)
    joined_s: list[float] = []
    listed_s: list[float] = []
    mem_mb: list[float] = []
    try:
        for i in range(args.runs):
            room = f"{scope}-{i}"
            env = {
                "LIVEKIT_URL": creds.url, "LIVEKIT_ROOM": room,
                "LIVEKIT_TOKEN": agent_token(creds, slug="farah", name="Farah", room=room, ttl_s=600),
                "AGENT_MODE": args.mode, "AGENT_CONFIG": json.dumps({"id": "farah", "slug": "farah", "name": "Farah"}),
            }
            c = client.containers.create(
                args.image, name=room, environment=env, network_mode="host", init=True,
                labels={Label.MANAGED: "true", Label.SCOPE: scope}, mem_limit="512m",
            )
            try:
                seen_listed: list[float | None] = []
                t0 = time.monotonic()
                c.start()
                lister = threading.Thread(
                    target=lambda seen=seen_listed, room=room: seen.append(
                        asyncio.run(listed(creds, room, "agent-farah", timeout=30))
                    )
                )
                lister.start()
                t_joined = wait_for_line(c, JOINED, timeout=30)
                lister.join(35)
                if t_joined is None or not seen_listed or seen_listed[0] is None:
                    print(f"run {i}: the agent did not join within 30 s; its log:\n{c.logs().decode(errors='replace')}")
                    return 1
                joined_s.append(t_joined - t0)
                listed_s.append(seen_listed[0] - t0)
                stats = c.stats(stream=False)  # one sample right after joining (takes ~1 s)
                mem = stats["memory_stats"].get("usage", 0) - stats["memory_stats"].get("stats", {}).get("cache", 0)
                mem_mb.append(mem / 1e6)
                print(f"run {i}: joined {joined_s[-1]:.2f}s  listed {listed_s[-1]:.2f}s  memory {mem_mb[-1]:.0f} MB")
            finally:
                c.remove(force=True)
    finally:
        server.stop()
    for label, values in (("start→joined", joined_s), ("start→listed", listed_s)):
        print(f"{label:15} median {statistics.median(values):.2f}s  p90 {pct(values, 0.9):.2f}s  "
              f"min {min(values):.2f}s  max {max(values):.2f}s  (n={len(values)}, mode {args.mode})")
    print(f"memory          median {statistics.median(mem_mb):.0f} MB right after joining")
    return 0


if __name__ == "__main__":
    sys.exit(main())
