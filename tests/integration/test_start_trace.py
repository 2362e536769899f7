"""One trace per start, received by a real Jaeger: a trigger on the real Docker engine with the real agent image,
continued from the caller's `traceparent`, through every stage to LiveKit's webhook saying the agent joined, with
the agent's own spans (load, connect, first audio) in the same trace under the engine call; the client's progress
stream hears the same stages as they happen.

The agent exports to Jaeger as a deployment's agents would: the collector listens on the agents' network gateway
on a port the host filter lets through (ORCH_AGENT_HOST_PORTS), and ORCH_AGENT_OTLP_ENDPOINT names it."""

from __future__ import annotations

import asyncio
import contextlib
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
from orchestrator.rules import pool as pool_rules
from orchestrator.rules.isolation import AgentNetwork
from orchestrator.rules.naming import Label
from orchestrator.settings import Settings

pytestmark = [pytest.mark.docker, pytest.mark.livekit]
AGENT_IMAGE = "agent-orchestrator/agent:latest"
STAGES = ["tenant_lookup", "admission", "room_claim", "engine", "agent_joined"]
AGENT_SPANS = ["agent.load", "agent.connect", "agent.first_audio"]


@pytest.fixture(scope="module")
def jaeger(agent_network: AgentNetwork) -> Iterator[Jaeger]:
    with running_jaeger(agent_gateway=agent_network.gateway) as j:
        yield j


def trace_spans(jaeger: Jaeger, service: str, trace_id: str, wanted: set[str], *, root: str = "trigger",
                timeout_s: float = 20) -> dict[str, dict[str, Any]]:
    """The spans of one trace by operation name, once all of `wanted` arrived (exporters and the collector batch)."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = {s["operationName"]: s for s in jaeger.spans(service, operation=root, timeout_s=5)
                 if s["traceID"] == trace_id}
        if wanted <= set(spans) or time.monotonic() > deadline:
            return spans
        time.sleep(0.2)


def parent_of(span: dict[str, Any]) -> str | None:
    refs = [r for r in span.get("references") or [] if r["refType"] == "CHILD_OF"]
    return refs[0]["spanID"] if refs else None


def tags(span: dict[str, Any]) -> dict[str, Any]:
    return {t["key"]: t["value"] for t in span["tags"]}


def assert_agent_spans(spans: dict[str, dict[str, Any]], *, launch: str) -> None:
    """The agent's spans: children of the engine call, from the agent's own service, in order, none an error."""
    engine = spans["engine"]
    for name in AGENT_SPANS:
        span = spans[name]
        assert parent_of(span) == engine["spanID"], (name, span.get("references"))
        assert span["serviceName"] == "agent" and tags(span)["agent.launch"] == launch, (name, tags(span))
        assert "error" not in tags(span), (name, tags(span))
        assert span["startTime"] >= engine["startTime"], name  # one host clock: the agent started inside the call
    end = {name: spans[name]["startTime"] + spans[name]["duration"] for name in AGENT_SPANS}
    assert end["agent.load"] <= spans["agent.connect"]["startTime"] + 1 and end["agent.connect"] <= end["agent.first_audio"]
    assert tags(spans["agent.first_audio"])["livekit.track"] == "agent-voice"


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


def traced_settings(jaeger: Jaeger, livekit: LiveKitServer, *, port: int, scope: str, tmp_path: Path,
                    monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> tuple[Settings, str]:
    """An orchestrator's settings with tracing on (the OTEL_* variables) and agents told where to export; its service name."""
    service = f"orch-test-{secrets.token_hex(3)}"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", jaeger.otlp_http_endpoint)
    monkeypatch.setenv("OTEL_SERVICE_NAME", service)
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")  # the batch processor's wait, in ms
    base: dict[str, Any] = dict(
        scope=scope, tenants_file=write_tenants(tmp_path / "tenants.yaml", livekit), agent_image=AGENT_IMAGE,
        agent_memory="256m", port=port, reconcile_enabled=False, agent_stop_timeout_s=2,
        agent_otlp_endpoint=jaeger.otlp_http_endpoint,  # on the gateway: the agents' filter lets its port through
    )
    return Settings(**{**base, **overrides}), service


async def joined_start(c: httpx.AsyncClient, room: str, *, container: str, livekit: LiveKitServer,
                       kind: str = "trigger") -> dict[str, Any]:
    """The newest `kind` start of `room` once LiveKit's webhook said its agent joined (logs printed when it never does)."""
    async def joined() -> dict[str, Any] | None:
        starts = [s for s in (await c.get("/api/v1/starts", params={"room": room})).json()["starts"] if s["kind"] == kind]
        marks = {m["stage"]: m for m in starts[0]["stages"]} if starts else {}
        return starts[0] if marks.get("agent_joined", {}).get("outcome") == "ok" else None

    try:
        return await eventually(joined, timeout=60, what=f"the agent's join after a {kind} reported by LiveKit's webhook")
    except AssertionError:
        print((await c.get("/api/v1/starts", params={"room": room})).json(), livekit.log_tail())
        with contextlib.suppress(docker.errors.NotFound):
            print(docker.from_env().containers.get(container).logs(tail=40).decode(errors="replace"))
        raise


def trigger_body(room: str) -> dict[str, str]:
    return {"agent_slug": "farah", "room_name": room, "user_id": "alice", "client_id": CLIENT_ID, "mode": "voice"}


async def test_a_trigger_is_one_trace_from_the_callers_context_to_the_agent_joined(
    jaeger: Jaeger, hooked_livekit: LiveKitServer, orch_port: int, scope: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient,
) -> None:
    settings, service = traced_settings(jaeger, hooked_livekit, port=orch_port, scope=scope, tmp_path=tmp_path,
                                        monkeypatch=monkeypatch)
    server = await start_orchestrator(settings)
    room = f"traced-{secrets.token_hex(3)}"
    caller_trace, caller_span = secrets.token_hex(16), secrets.token_hex(8)
    events: list[tuple[str, dict[str, Any]]] = []
    try:
        assert server.app.state.engine.tracing.enabled
        reader = asyncio.create_task(_progress(server.base_url, room, events))
        await asyncio.sleep(0.2)  # the stream is open before the start (a frontend opens it, then triggers)
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            made = await c.post("/api/v1/trigger-agent", json=trigger_body(room),
                                headers={"traceparent": f"00-{caller_trace}-{caller_span}-01"})
            assert made.status_code == 201, made.text
            start = await joined_start(c, room, container=made.json()["container_name"], livekit=hooked_livekit)
        assert [m["stage"] for m in start["stages"]] == STAGES and start["launch"] == "cold"
        assert start["trace_id"] == caller_trace
        await asyncio.wait_for(reader, timeout=10)
        env = dict(e.split("=", 1) for e in docker_client.containers.get(made.json()["container_name"]).attrs["Config"]["Env"])
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == jaeger.otlp_http_endpoint
        assert env["TRACEPARENT"].split("-")[1] == caller_trace
        # The agent's spans are sent right after its first audio; wait for them while the agent still runs.
        spans = await asyncio.to_thread(trace_spans, jaeger, service, caller_trace, {*AGENT_SPANS, "engine"})
    finally:
        await server.stop()  # flushes the batched spans

    # The progress stream: each stage began and ended, in order, then the join.
    done = [d["stage"] for kind, d in events if kind == "stage" and d["state"] == "ok"]
    assert done == STAGES, events
    assert ("start", "created") in [(k, d.get("outcome")) for k, d in events]

    wanted = {"POST /api/v1/trigger-agent", "trigger", *STAGES, *AGENT_SPANS}
    spans = await asyncio.to_thread(trace_spans, jaeger, service, caller_trace, wanted)
    assert wanted <= set(spans), sorted(spans)

    http = spans["POST /api/v1/trigger-agent"]
    assert parent_of(http) == caller_span  # the caller's traceparent was honoured
    assert parent_of(spans["trigger"]) == http["spanID"]
    for stage in STAGES:
        assert parent_of(spans[stage]) == spans["trigger"]["spanID"], (stage, sorted(spans))
    root = tags(spans["trigger"])
    assert root["orchestrator.launch"] == "cold" and root["orchestrator.outcome"] == "created"
    assert root["orchestrator.engine"] == "docker" and root["orchestrator.room"] == room
    assert_agent_spans(spans, launch="cold")
    print("cold agent spans (ms):", {n: spans[n]["duration"] / 1000 for n in AGENT_SPANS})


async def test_a_pool_claim_hands_the_trace_to_the_warm_member(
    jaeger: Jaeger, hooked_livekit: LiveKitServer, orch_port: int, scope: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient,
) -> None:
    """A warm start: the member was made before the start, so its trace context and endpoint come in the assignment."""
    settings, service = traced_settings(jaeger, hooked_livekit, port=orch_port, scope=scope, tmp_path=tmp_path,
                                        monkeypatch=monkeypatch, pool_min=1, pool_max=1, pool_sweep_s=1.0)
    server = await start_orchestrator(settings)
    caller_trace = secrets.token_hex(16)
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            first = await c.post("/api/v1/trigger-agent", json=trigger_body(f"cold-{secrets.token_hex(3)}"))
            assert first.status_code == 201, first.text  # cold: the pool learns this domain's template here

            async def idle() -> bool:
                return sum(p["idle"] for p in (await c.get("/api/v1/admin/pool")).json()["pools"]) >= 1

            await eventually(idle, timeout=60, what="a warm pool member")
            member_env = [e for c_ in docker_client.containers.list(filters={"label": f"{Label.SCOPE}={scope}"})
                          if c_.labels.get(pool_rules.POOL) for e in c_.attrs["Config"]["Env"]]
            # Nothing of a start in a member; the collector's address only, so it loads the SDK while it waits.
            assert member_env and not any(e.startswith("TRACEPARENT=") for e in member_env), member_env
            assert f"OTEL_EXPORTER_OTLP_ENDPOINT={jaeger.otlp_http_endpoint}" in member_env, member_env
            room = f"warm-{secrets.token_hex(3)}"
            made = await c.post("/api/v1/trigger-agent", json=trigger_body(room),
                                headers={"traceparent": f"00-{caller_trace}-{secrets.token_hex(8)}-01"})
            assert made.status_code == 201, made.text
            start = await joined_start(c, room, container=made.json()["container_name"], livekit=hooked_livekit)
            assert start["launch"] == "warm" and start["trace_id"] == caller_trace, start
            spans = await asyncio.to_thread(trace_spans, jaeger, service, caller_trace, {*AGENT_SPANS, "engine"})
    finally:
        await server.stop()
        for v in docker_client.volumes.list(filters={"label": f"{Label.SCOPE}={scope}"}):
            v.remove(force=True)  # the pool's claim records
    assert {*AGENT_SPANS, "engine", "trigger"} <= set(spans), sorted(spans)
    assert tags(spans["trigger"])["orchestrator.launch"] == "warm"
    assert_agent_spans(spans, launch="warm")
    print("warm agent spans (ms):", {n: spans[n]["duration"] / 1000 for n in AGENT_SPANS})
