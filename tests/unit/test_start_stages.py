"""Per-stage timing of starts: histograms, timelines, progress and spans from one instrument; off costs no span."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from orchestrator.core.errors import LimitExceeded
from orchestrator.core.models import Mode
from orchestrator.observability.refusals import refusal_reason
from orchestrator.observability.tracing import Tracing, tracing_wanted
from orchestrator.core.errors import ConfigurationError
from devtools.fakes import FARAH, fake_app


@pytest.mark.parametrize(("env", "wanted"), [
    ({}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, True),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, True),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_SDK_DISABLED": "true"}, False),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
    ({"OTEL_TRACES_EXPORTER": "otlp"}, True),  # the SDK's default endpoint (localhost:4318)
])
def test_tracing_is_on_only_when_the_standard_variables_ask(env: dict[str, str], wanted: bool) -> None:
    assert tracing_wanted(env) is wanted


def test_unsupported_exporters_and_protocols_are_refused_at_start() -> None:
    with pytest.raises(ConfigurationError, match="zipkin"):
        tracing_wanted({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(ConfigurationError, match="http/protobuf"):
        Tracing.from_env({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://x:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


@pytest.mark.parametrize(("code", "details", "reason"), [
    ("limit_exceeded", {"rule": "room 'r' already has 1 agents (max_agents_per_room)"}, "max_agents_per_room"),
    ("limit_exceeded", {"rule": "client 'c' already runs 5 agents (max_agents_per_client)"}, "max_agents_per_client"),
    ("limit_exceeded", {"rule": "this deployment already runs 9 agents (max_agents_total)"}, "max_agents_total"),
    ("limit_exceeded", {"rule": "swarm capacity", "reason": "insufficient resources on 3 nodes"}, "no_capacity"),
    ("limit_exceeded", {"throttle": True}, "wrong_key_throttle"),
    ("dependency_unavailable", {"dependency": "docker"}, "dependency_unavailable:docker"),
    ("dependency_unavailable", {"dependency": "something-new"}, "dependency_unavailable"),
    ("not_found", {"field": "agent_slug"}, "not_found"),
    ("invalid_input", None, "invalid_input"),
])
def test_refusal_reasons_come_from_a_fixed_set(code: str, details: dict | None, reason: str) -> None:
    assert refusal_reason(code, details) == reason


def _stage_counts(metrics: object, **labels: str) -> float:
    return metrics.registry.get_sample_value("orchestrator_start_stage_duration_seconds_count", labels) or 0.0  # type: ignore[attr-defined]


async def test_a_cold_start_is_timed_by_stage_and_its_join_closes_the_timeline() -> None:
    async with fake_app() as (api, engine):
        resp = await api.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "mode": "voice", "room_name": "r1",
                                                              "user_id": "u", "client_id": "c1"})
        assert resp.status_code == 201, resp.text
        [record] = engine.starts.timelines(room="r1")
        assert [m.stage for m in record.stages] == ["tenant_lookup", "admission", "room_claim", "engine", "agent_joined"]
        assert record.launch == "cold" and record.outcome == "created" and record.engine == "fake"
        assert all(m.outcome == "ok" for m in record.stages[:4]) and record.stages[4].outcome == "running"
        offsets = [m.offset_s for m in record.stages]
        assert offsets == sorted(offsets)
        for stage in ("tenant_lookup", "admission", "room_claim", "engine"):
            assert _stage_counts(engine.metrics, stage=stage, engine="fake", launch="cold", outcome="ok") == 1
        # LiveKit's webhook reports the agent (identity agent-<slug>) in the room: the last stage ends.
        assert engine.starts.joined(client_id="c1", room="r1", identity=f"agent-{FARAH.slug}")
        assert record.stages[4].outcome == "ok" and record.stages[4].duration_s is not None
        assert _stage_counts(engine.metrics, stage="agent_joined", engine="fake", launch="cold", outcome="ok") == 1
        assert not engine.starts.joined(client_id="c1", room="r1", identity=f"agent-{FARAH.slug}")  # once

        again = await api.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "mode": "voice", "room_name": "r1",
                                                               "user_id": "u", "client_id": "c1"})
        assert again.status_code == 200
        latest = engine.starts.timelines(room="r1")[0]
        assert latest.launch == "reuse" and "agent_joined" not in [m.stage for m in latest.stages]


async def test_a_refused_start_names_the_stage_that_refused_and_is_logged_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    from orchestrator.settings import Settings

    settings = Settings(scope="unit", reconcile_enabled=False, usage_sampling_enabled=False, docker_events_enabled=False,
                        max_agents_per_room=1)
    async with fake_app(settings) as (api, engine):
        body = {"mode": "voice", "room_name": "r2", "user_id": "u", "client_id": "c1"}
        assert (await api.post("/api/v1/trigger-agent", json={**body, "agent_slug": "farah"})).status_code == 201
        caplog.set_level("INFO", logger="orchestrator.refusals")
        resp = await api.post("/api/v1/trigger-agent", json={**body, "agent_slug": "clarence-coherence"})
        assert resp.status_code == 429
        record = engine.starts.timelines(room="r2")[0]
        assert record.outcome == "limit_exceeded" and record.stages[-1].stage == "admission"
        assert record.stages[-1].outcome == "limit_exceeded"
        assert _stage_counts(engine.metrics, stage="admission", engine="fake", launch="none", outcome="limit_exceeded") == 1
        assert engine.metrics.registry.get_sample_value(
            "orchestrator_refusals_total", {"reason": "max_agents_per_room", "status": "429"}) == 1
        [line] = [r for r in caplog.records if r.name == "orchestrator.refusals"]
        assert line.reason == "max_agents_per_room" and line.status == 429  # type: ignore[attr-defined]
        # A refusal by the framework (an unknown path) and by the guard are counted too.
        assert (await api.get("/api/v1/no-such-thing")).status_code == 404
        assert engine.metrics.registry.get_sample_value("orchestrator_refusals_total", {"reason": "not_found", "status": "404"}) == 1


async def test_with_tracing_off_no_span_is_made() -> None:
    """A real SDK provider installed globally records any span made through the API: ours must make none."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    async with fake_app() as (api, engine):
        assert engine.tracing.enabled is False
        for room in ("off-1", "off-1", "off-2"):
            resp = await api.post("/api/v1/trigger-agent", json={"agent_slug": "farah", "mode": "voice", "room_name": room,
                                                                  "user_id": "u", "client_id": "c1"},
                                  headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
            assert resp.status_code in (200, 201)
        assert engine.starts.timelines(room="off-1")[0].trace_id is None
    provider.force_flush()
    assert exporter.get_finished_spans() == ()


async def test_with_tracing_on_a_start_is_one_span_tree() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing.from_env({}, exporter=exporter)
    from orchestrator.composition import Orchestrator
    from orchestrator.settings import Settings
    from devtools.fakes import FakeRooms, FakeRuntime, tenants

    settings = Settings(scope="unit", reconcile_enabled=False, usage_sampling_enabled=False, docker_events_enabled=False)
    async with Orchestrator.running(settings, loops=False, runtime=FakeRuntime(), livekit=FakeRooms(), tenants=tenants(),
                                    tracing=tracing) as engine:
        result = await engine.trigger.trigger(client_id="c1", agent_slug="farah", mode=Mode.voice, user_id="u", room_name="on-1")
        assert engine.starts.joined(client_id="c1", room="on-1", identity="agent-farah")
        env = engine.runtime.last_spec.env
        assert result.container.name == engine.runtime.last_spec.name
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["trigger"]
    assert root.parent is None
    for name in ("tenant_lookup", "admission", "room_claim", "engine", "agent_joined"):
        assert spans[name].parent.span_id == root.context.span_id, name
        assert spans[name].context.trace_id == root.context.trace_id
    assert root.attributes["orchestrator.launch"] == "cold"
    # The agent continues the trace from the engine call's span.
    assert env["TRACEPARENT"].split("-")[1:3] == [f"{root.context.trace_id:032x}", f"{spans['engine'].context.span_id:016x}"]


def test_limit_refusal_error_carries_the_rule() -> None:
    exc = LimitExceeded("x", details={"rule": "room 'a' already has 1 agents (max_agents_per_room)"})
    assert refusal_reason(exc.code, exc.details) == "max_agents_per_room"


async def test_a_close_is_on_the_rooms_timeline() -> None:
    async with fake_app() as (api, engine):
        body = {"agent_slug": "farah", "mode": "voice", "room_name": "c-1", "user_id": "u", "client_id": "c1"}
        assert (await api.post("/api/v1/trigger-agent", json=body)).status_code == 201
        await engine.operations.close_room("c1", "c-1")
        closing = engine.starts.timelines(room="c-1")[0]
        assert closing.kind == "close" and closing.outcome == "closed" and [m.stage for m in closing.stages] == ["close"]
        assert _stage_counts(engine.metrics, stage="close", engine="fake", launch="none", outcome="ok") == 1


async def test_a_restart_and_a_dispatched_job_are_traces_of_their_own() -> None:
    exporter = InMemorySpanExporter()
    tracing = Tracing.from_env({}, exporter=exporter)
    from orchestrator.composition import Orchestrator
    from orchestrator.core.models import ContainerKey
    from orchestrator.settings import Settings
    from devtools.fakes import CLIENT, FakeRooms, FakeRuntime, tenants

    settings = Settings(scope="unit", reconcile_enabled=False, usage_sampling_enabled=False, docker_events_enabled=False)
    async with Orchestrator.running(settings, loops=False, runtime=FakeRuntime(), livekit=FakeRooms(), tenants=tenants(),
                                    tracing=tracing) as engine:
        await engine.trigger.launch_for_key(ContainerKey(client_id="c1", agent_slug="farah", room="re-1"), mode=Mode.voice)
        await engine.trigger.launch_dispatched(ContainerKey(client_id="c1", agent_slug="farah", room="job-1"), client=CLIENT,
                                               agent=FARAH, mode=Mode.voice, token="job-token", labels={})
        kinds = [r.kind for r in engine.starts.timelines(limit=5)]
        assert kinds == ["dispatch", "restart"]
    spans = exporter.get_finished_spans()
    roots = {s.name: s for s in spans if s.parent is None}
    assert set(roots) == {"restart", "dispatch"}
    restart_children = sorted(s.name for s in spans if s.parent is not None and s.parent.span_id == roots["restart"].context.span_id)
    assert restart_children == ["admission", "engine", "room_claim", "tenant_lookup"]
    dispatch_children = [s.name for s in spans if s.parent is not None and s.parent.span_id == roots["dispatch"].context.span_id]
    assert dispatch_children == ["engine"]  # called without the availability answer's stages (the next test gives them)


async def test_a_dispatched_job_starts_when_livekit_asked_with_the_lookup_and_limits_timed_then() -> None:
    """The availability answer (tenant lookup, limits) comes before the assignment that opens the start: its stages lead."""
    import time

    from orchestrator.core.models import ContainerKey
    from orchestrator.observability.starts import Measured, Stage, Starts
    from orchestrator.services.trigger import TriggerService
    from orchestrator.settings import Settings
    from devtools.fakes import CLIENT, FakeRooms, FakeRuntime, tenants

    exporter = InMemorySpanExporter()
    starts = Starts(tracing=Tracing.from_env({}, exporter=exporter), engine="fake")
    asked = time.time_ns() - 300_000_000  # LiveKit asked 0.3 s ago
    earlier = (Measured(Stage.tenant_lookup, asked, asked + 2_000_000), Measured(Stage.admission, asked + 2_000_000, asked + 3_000_000))
    trigger = TriggerService(settings=Settings(scope="unit"), tenants=tenants(), livekit=FakeRooms(), runtime=FakeRuntime(),
                             starts=starts)
    await trigger.launch_dispatched(ContainerKey(client_id="c1", agent_slug="farah", room="job-2"), client=CLIENT, agent=FARAH,
                                    mode=Mode.voice, token="job-token", labels={}, earlier=earlier)
    [record] = starts.timelines(room="job-2")
    assert [(m.stage, m.offset_s, m.duration_s) for m in record.stages[:2]] == [("tenant_lookup", 0.0, 0.002), ("admission", 0.002, 0.001)]
    assert [m.stage for m in record.stages] == ["tenant_lookup", "admission", "engine", "agent_joined"]
    assert record.stages[2].offset_s >= 0.3  # the engine call came after the wait for LiveKit's assignment
    starts.tracing.shutdown()  # flushes the batch
    spans = {s.name: s for s in exporter.get_finished_spans()}
    root = spans["dispatch"]
    assert root.parent is None and root.start_time == asked
    for name, m in zip(("tenant_lookup", "admission"), earlier, strict=True):
        assert spans[name].parent.span_id == root.context.span_id and (spans[name].start_time, spans[name].end_time) == (m.start_ns, m.end_ns)
    assert spans["engine"].parent.span_id == root.context.span_id


def test_trace_renders_each_start_as_a_timeline_on_one_scale() -> None:
    from orchestrator.cli.trace import render

    start = {"id": 3, "kind": "trigger", "agent_slug": "farah", "room": "r", "client_id": "c1", "started_at": "t0",
             "outcome": "created", "launch": "cold", "engine": "docker", "container": "agent_c1_farah_r", "node": None,
             "trace_id": "ab" * 16, "stages": [
                 {"stage": "tenant_lookup", "offset_s": 0.0, "duration_s": 0.001, "outcome": "ok"},
                 {"stage": "engine", "offset_s": 0.002, "duration_s": 0.998, "outcome": "ok"},
                 {"stage": "agent_joined", "offset_s": 1.0, "duration_s": None, "outcome": "running"}]}
    lines = render([start]).splitlines()
    assert lines[0].startswith("#3 trigger farah in r (c1) at t0: created, cold on docker agent_c1_farah_r  trace abab")
    assert "998.0 ms" in lines[2] and lines[2].endswith("#" * 39)  # the engine call fills the scale
    assert "…" in lines[3] and lines[3].endswith(">")  # still waiting for the join
    assert render([]).startswith("no starts recorded")
