"""One trace per start, received by a real Jaeger: a trigger on the real Docker engine with the real agent image,
continued from the caller's `traceparent`, through every stage to LiveKit's webhook saying the agent joined; the
client's progress stream hears the same stages as they happen."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest

from tests.conftest import CLIENT_ID, write_tenants
from devtools.agent_room import eventually
from devtools.jaeger import Jaeger, running_jaeger
from devtools.livekit_server import LiveKitServer
from devtools.orchestrator_server import start_orchestrator
from orchestrator.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
AGENT_IMAGE = "agent-orchestrator/agent:latest"
STAGES = ["tenant_lookup", "admission", "room_claim", "engine", "agent_joined"]


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with running_jaeger() as j:
        yield j


async def _progress(base: str, room: str, into: list[tuple[str, dict[str, Any]]]) -> None:
    """Read the room's progress stream until it ends (the agent joined), as the tenant's frontend would."""
    async with httpx.AsyncClient(timeout=60) as c, c.stream(
        "GET", f"{base}/api/v1/rooms/{room}/progress", params={"client_id": CLIENT_ID, "timeout_s": 60},
    ) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        event = None
        async for line in resp.aiter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: ") and event is not None:
                into.append((event, json.loads(line.removeprefix("data: "))))


async def test_a_trigger_is_one_trace_from_the_callers_context_to_the_agent_joined(
    jaeger: Jaeger, hooked_livekit: LiveKitServer, orch_port: int, scope: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    service = f"orch-test-{secrets.token_hex(3)}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # the batch processor's wait, in ms
    settings = Settings(
        scope=scope, tenants_file=write_tenants(tmp_path / "tenants.yaml", hooked_livekit), agent_image=AGENT_IMAGE,
        agent_memory="256m", port=orch_port, reconcile_enabled=False, agent_stop_timeout_s=2,
    )
    server = await start_orchestrator(settings)
    room = f"traced-{secrets.token_hex(3)}"
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        assert server.app.state.engine.tracing.enabled
        reader = asyncio.create_task(_progress(server.base_url, room, events))
        await asyncio.sleep(0.2)  # the stream is open before the start (a frontend opens it, then triggers)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            made = await c.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "room_name": room, "user_id": "alice",
                                                               "client_id": CLIENT_ID},
                                headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})
            assert made.status_code == 201, made.text

            async def joined() -> dict[str, Any] | None:
                starts = (await c.get("/api/v1/starts", params={"room": room})).json()["starts"]
                marks = {m["stage"]: m for m in starts[0]["stages"]} if starts else {}
                return starts[0] if marks.get("agent_joined", {}).get("outcome") == "ok" else None

            try:
                start = await eventually(joined, timeout=60, what="the agent's join reported by LiveKit's webhook")
            except AssertionError:
                print((await c.get("/api/v1/starts", params={"room": room})).json(), hooked_livekit.log_tail())
                print(docker.from_env().containers.get(made.json()["container_name"]).logs(tail=40).decode(errors="replace"))
                raise
        assert [m["stage"] for m in start["stages"]] == STAGES and start["launch"] == "cold"
        assert start["trace_id"] == caller_trace
        await asyncio.wait_for(reader, timeout=10)
    finally:
        await server.stop()  # flushes the batched spans

    # The progress stream: each stage began and ended, in order, then the join.
    done = [d["stage"] for kind, d in events if kind == "stage" and d["state"] == "ok"]
    assert done == STAGES, events
    assert ("start", "created") in [(k, d.get("outcome")) for k, d in events]

    wanted = {"POST /api/v1/trigger-agent", "trigger", *STAGES}
    deadline = time.monotonic() + 20
    while True:  # the exporter and the collector both batch: spans of one trace may arrive in several batches
        spans = {s["operationName"]: s for s in jaeger.spans(service, operation="trigger", timeout_s=5)
                 if s["traceID"] == caller_trace}
        if wanted <= set(spans) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    assert wanted <= set(spans), sorted(spans)

    def parent(name: str) -> str | None:
        refs = [r for r in spans[name].get("references") or [] if r["refType"] == "CHILD_OF"]
        return refs[0]["spanID"] if refs else None

    http = spans["POST /api/v1/trigger-agent"]
    assert parent("POST /api/v1/trigger-agent") == caller_span  # the caller's traceparent was honoured
    assert parent("trigger") == http["spanID"]
    for stage in STAGES:
        assert parent(stage) == spans["trigger"]["spanID"], (stage, sorted(spans))
    tags = {t["key"]: t["value"] for t in spans["trigger"]["tags"]}
    assert tags["orchestrator.launch"] == "cold" and tags["orchestrator.outcome"] == "created"
    assert tags["orchestrator.engine"] == "docker" and tags["orchestrator.room"] == room
