"""The lifecycle feed over server-sent events, read from a real uvicorn server (admin key, resumable)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.core.apikeys import entry_yaml, generate
from orchestrator.settings import Settings
from tests.conftest import CLIENT_ID
from devtools.livekit_server import free_port
from devtools.orchestrator_server import start_orchestrator

pytestmark = [pytest.mark.docker, pytest.mark.livekit]


async def read_events(resp: httpx.Response, want: Callable[[dict[str, Any]], bool], *, timeout_s: float) -> list[dict[str, Any]]:
    """Parse SSE frames until one satisfies `want`; returns every event read."""
    got: list[dict[str, Any]] = []

    async def run() -> None:
        frame: dict[str, str] = {}
        async for line in resp.aiter_lines():
            if line == "":
                if "data" in frame:
                    event = json.loads(frame["data"])
                    assert frame["id"] == str(event["seq"]) and frame["event"] == event["kind"]
                    got.append(event)
                    if want(event):
                        return
                frame = {}
            elif not line.startswith(":"):
                field, _, val = line.partition(": ")
                frame[field] = val

    await asyncio.wait_for(run(), timeout_s)
    return got


async def test_sse_stream_needs_admin_key_and_resumes(make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    admin = generate()
    (tmp_path / "keys.yaml").write_text("keys:\n" + entry_yaml(name="ops", key=admin, client_id=None))
    srv = await start_orchestrator(make_settings(port=free_port(), api_keys_file=tmp_path / "keys.yaml", usage_sampling_enabled=False))
    auth = {"Authorization": f"Bearer {admin}"}
    try:
        async with httpx.AsyncClient(base_url=srv.base_url, timeout=30) as c:
            assert (await c.get("/api/v1/admin/events/stream")).status_code == 401
            body = {"agent_slug": "farah", "room_name": "sse-room", "user_id": "u", "client_id": CLIENT_ID}
            async with c.stream("GET", "/api/v1/admin/events/stream", headers=auth) as resp:
                assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
                started = time.monotonic()
                assert (await c.post("/api/v1/trigger-agent", json=body, headers=auth)).status_code == 201
                events = await read_events(resp, lambda e: e["kind"] == "trigger", timeout_s=10)
                print(f"\ntrigger event on the stream {time.monotonic() - started:.3f}s after the request was sent")
            first = events[-1]
            assert (first["outcome"], first["room"], first["client_id"]) == ("created", "sse-room", CLIENT_ID)
            assert admin not in json.dumps(events)
            # The server forgets a subscriber that went away.
            feed = srv.app.state.feed
            deadline = time.monotonic() + 5
            while feed.subscribers and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            assert feed.subscribers == 0
            # A reconnect with Last-Event-ID gets what happened while it was away, and nothing before.
            assert (await c.post("/api/v1/trigger-agent", json=body, headers=auth)).json()["status"] == "reused"
            async with c.stream("GET", "/api/v1/admin/events/stream", headers={**auth, "Last-Event-ID": str(first["seq"])}) as resp:
                again = await read_events(resp, lambda e: e["kind"] == "trigger", timeout_s=10)
            assert again[0]["seq"] == first["seq"] + 1 and again[-1]["outcome"] == "reused"
            listed = (await c.get("/api/v1/admin/events", params={"after": first["seq"] - 1}, headers=auth)).json()["events"]
            assert [e["outcome"] for e in listed if e["kind"] == "trigger"] == ["created", "reused"]
    finally:
        await srv.stop()
