"""The other two ways an agent starts are one trace each in a real Jaeger, like a trigger (test_start_trace.py):
a job LiveKit dispatched (root `dispatch`) and the reconciler's restart of an agent that crashed in a call (root
`restart`), each through the engine call to LiveKit's webhook saying the agent joined, with the new agent's own
spans (load, connect, first audio) in the same trace under the engine call.

Real parts only: the real Docker engine and agent image, a real livekit-server (its dispatch service and its
webhooks), a human participant in the room, a SIGKILL, and the collector the agents export to."""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
from livekit import api

from devtools.agent_room import Participant, eventually
from devtools.jaeger import Jaeger
from devtools.livekit_server import LiveKitServer
from devtools.orchestrator_server import start_orchestrator
from orchestrator.core.models import ContainerKey
from orchestrator.rules.naming import container_name
from tests.conftest import CLIENT_ID
from tests.integration.test_dispatch import CLARENCE, lkapi, tenants
from tests.integration.test_start_trace import (  # noqa: F401 (jaeger: the module's collector fixture)
    AGENT_SPANS, STAGES, assert_agent_spans, jaeger, joined_start, parent_of, tags, trace_spans, traced_settings,
    trigger_body,
)

pytestmark = [pytest.mark.docker, pytest.mark.livekit, pytest.mark.timeout(240)]
# The job's tenant lookup and limits are timed when LiveKit asks whether we take it; its assignment opens the engine call.
DISPATCH_STAGES = ["tenant_lookup", "admission", "engine", "agent_joined"]


def assert_stage_tree(spans: dict[str, dict[str, Any]], *, root: str, stages: list[str], room: str) -> dict[str, Any]:
    """`root` starts the trace (no parent), every stage is its child, the agent's spans are the engine call's; its tags."""
    assert {root, *stages, *AGENT_SPANS} <= set(spans), sorted(spans)
    assert parent_of(spans[root]) is None, spans[root].get("references")
    for name in stages:
        assert parent_of(spans[name]) == spans[root]["spanID"], (name, spans[name].get("references"))
    began = [spans[root]["startTime"], *(spans[name]["startTime"] for name in stages)]
    assert began == sorted(began), list(zip([root, *stages], began, strict=True))  # one host clock: the stages in their order
    root_tags = tags(spans[root])
    assert root_tags["orchestrator.room"] == room and root_tags["orchestrator.engine"] == "docker", root_tags
    assert root_tags["orchestrator.outcome"] == "created" and root_tags["orchestrator.launch"] == "cold", root_tags
    assert_agent_spans(spans, launch="cold")
    return root_tags


async def test_a_livekit_dispatch_is_one_trace_from_the_job_to_the_agent_joined(
    jaeger: Jaeger, hooked_livekit: LiveKitServer, orch_port: int, scope: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient,
) -> None:
    # One client on this LiveKit server: a job's room is then that client's without an ownership stamp (dispatch/rules).
    settings, service = traced_settings(jaeger, hooked_livekit, port=orch_port, scope=scope, tmp_path=tmp_path,
                                        monkeypatch=monkeypatch, dispatch_enabled=True, dispatch_status_interval_s=0.5,
                                        tenants_file=tenants(tmp_path / "one-client.yaml", hooked_livekit, agents=[CLARENCE]))
    server = await start_orchestrator(settings)
    room = f"dispatched-{secrets.token_hex(3)}"
    name = container_name(ContainerKey(client_id=CLIENT_ID, agent_slug="clarence-coherence", room=room))
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            async def registered() -> bool:
                rows = (await c.get("/api/v1/admin/dispatch")).json()["registrations"]
                return any(r["agent_name"] == "clarence-coherence" and r["state"] == "registered" for r in rows)

            await eventually(registered, timeout=20, what="clarence-coherence registered with LiveKit as a worker")
            async with lkapi(hooked_livekit) as lkc:
                await lkc.agent_dispatch.create_dispatch(api.CreateAgentDispatchRequest(
                    agent_name="clarence-coherence", room=room, metadata=json.dumps({"client_id": CLIENT_ID})))
            start = await joined_start(c, room, container=name, livekit=hooked_livekit, kind="dispatch")
            assert [m["stage"] for m in start["stages"]] == DISPATCH_STAGES and start["launch"] == "cold", start
            env = dict(e.split("=", 1) for e in docker_client.containers.get(name).attrs["Config"]["Env"])
            assert env["TRACEPARENT"].split("-")[1] == start["trace_id"], env.get("TRACEPARENT")
            spans = await asyncio.to_thread(trace_spans, jaeger, service, start["trace_id"], {*AGENT_SPANS, "engine"},
                                            root="dispatch")
    finally:
        await server.stop()  # flushes the batched spans
    spans = await asyncio.to_thread(trace_spans, jaeger, service, start["trace_id"], {"dispatch", *DISPATCH_STAGES, *AGENT_SPANS},
                                    root="dispatch")
    root = assert_stage_tree(spans, root="dispatch", stages=DISPATCH_STAGES, room=room)
    assert root["orchestrator.agent"] == "clarence-coherence", root
    print("dispatch spans (ms):", {n: spans[n]["duration"] / 1000 for n in [*DISPATCH_STAGES, *AGENT_SPANS]},
          "engine call began (ms after LiveKit asked):", (spans["engine"]["startTime"] - spans["dispatch"]["startTime"]) / 1000)


async def test_a_crash_restart_is_one_trace_of_its_own_to_the_new_agent_joined(
    jaeger: Jaeger, hooked_livekit: LiveKitServer, orch_port: int, scope: str, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, docker_client: docker.DockerClient,
) -> None:
    settings, service = traced_settings(jaeger, hooked_livekit, port=orch_port, scope=scope, tmp_path=tmp_path,
                                        monkeypatch=monkeypatch, reconcile_enabled=True)
    server = await start_orchestrator(settings)
    room = f"crashed-{secrets.token_hex(3)}"
    try:
        async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as c:
            made = await c.post("/api/v1/trigger-agent", json=trigger_body(room))
            assert made.status_code == 201, made.text
            name = made.json()["container_name"]
            first = await joined_start(c, room, container=name, livekit=hooked_livekit)
            async with Participant(hooked_livekit.url, made.json()["user_token"]) as human:
                await human.track_from("agent-farah", timeout=30)  # in a call: the reconciler restarts a crash here
                await asyncio.to_thread(docker_client.api.kill, name, signal="SIGKILL")
                start = await joined_start(c, room, container=name, livekit=hooked_livekit, kind="restart")
                assert [m["stage"] for m in start["stages"]] == STAGES and start["launch"] == "cold", start
                assert start["trace_id"] and start["trace_id"] != first["trace_id"], (start, first)
                new = docker_client.containers.get(name)
                assert new.id != made.json()["container_id"]
                env = dict(e.split("=", 1) for e in new.attrs["Config"]["Env"])
                assert env["TRACEPARENT"].split("-")[1] == start["trace_id"], env.get("TRACEPARENT")
                spans = await asyncio.to_thread(trace_spans, jaeger, service, start["trace_id"], {*AGENT_SPANS, "engine"},
                                                root="restart")
    finally:
        await server.stop()
    spans = await asyncio.to_thread(trace_spans, jaeger, service, start["trace_id"], {"restart", *STAGES, *AGENT_SPANS},
                                    root="restart")
    assert_stage_tree(spans, root="restart", stages=STAGES, room=room)
    print("restart spans (ms):", {n: spans[n]["duration"] / 1000 for n in [*STAGES, *AGENT_SPANS]})
