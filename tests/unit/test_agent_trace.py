"""The agent's trace continuation: only a valid W3C traceparent plus an endpoint turns it on; else a no-op that
imports nothing of OpenTelemetry."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from agent_image.tracing import AgentTrace, traces_endpoint, valid_traceparent

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ON = {"TRACEPARENT": TP, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}


@pytest.mark.parametrize(("value", "ok"), [
    (TP, True), (f" {TP} ", True), (None, False), ("", False), ("01-" + TP[3:], False),
    ("00-" + "0" * 32 + "-b7ad6b7169203331-01", False), ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", False),
    ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", False), ("garbage; rm -rf /", False),
])
def test_only_a_w3c_traceparent_is_continued(value: str | None, ok: bool) -> None:
    assert (valid_traceparent(value) is not None) is ok


@pytest.mark.parametrize(("env", "url"), [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://172.29.0.1:4318"}, "http://172.29.0.1:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318/"}, "http://c:4318/v1/traces"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://t:1/x"}, "http://t:1/x"),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "  "}, None),
])
def test_the_traces_url_follows_the_standard_variables(env: dict[str, str], url: str | None) -> None:
    assert traces_endpoint(env) == url


def test_without_an_endpoint_or_context_every_call_is_a_no_op_and_nothing_of_opentelemetry_is_imported() -> None:
    # A fresh interpreter: this test process has the SDK loaded already (the orchestrator's tests use it).
    probe = f"""
import sys
from agent_image.tracing import AgentTrace
for env in ({{}}, {{"TRACEPARENT": "{TP}"}}, {{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}},
            {{"TRACEPARENT": "junk", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}}):
    t = AgentTrace.from_env(env)
    assert t.enabled is False
    t.loaded(); t.connected(start_ns=1); t.first_audio(joined_ns=1, track="a"); t.close()
loaded = sorted(m for m in sys.modules if m.startswith("opentelemetry"))
assert not loaded, loaded
"""
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr


def _traced(env: dict[str, str]) -> tuple[AgentTrace, object]:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    trace = AgentTrace.from_env(env, started_ns=time.time_ns() - 1_000_000, attributes={"agent.launch": "warm"})
    assert trace.enabled
    exporter = InMemorySpanExporter()
    trace._provider.add_span_processor(SimpleSpanProcessor(exporter))
    return trace, exporter


def test_with_context_and_endpoint_the_agents_spans_are_children_of_the_handed_context() -> None:
    trace, exporter = _traced(ON)
    trace.loaded(**{"agent.behaviour": "offline"})
    connect = time.time_ns()
    trace.connected(start_ns=connect)
    joined = time.time_ns()
    trace.first_audio(joined_ns=joined, track="agent-voice")
    trace.first_audio(joined_ns=joined, track="agent-voice-2")  # only the first one counts
    spans = {s.name: s for s in exporter.get_finished_spans()}  # type: ignore[attr-defined]
    assert list(spans) == ["agent.load", "agent.connect", "agent.first_audio"]
    for s in spans.values():
        assert f"{s.context.trace_id:032x}" == TP.split("-")[1] and f"{s.parent.span_id:016x}" == TP.split("-")[2]
        assert s.attributes["agent.launch"] == "warm" and s.resource.attributes["service.name"] == "agent"
    assert spans["agent.load"].end_time <= spans["agent.connect"].end_time <= spans["agent.first_audio"].end_time
    assert spans["agent.connect"].start_time == connect and spans["agent.first_audio"].start_time == joined
    assert spans["agent.first_audio"].attributes["livekit.track"] == "agent-voice"
    assert spans["agent.load"].attributes["agent.behaviour"] == "offline"
    trace._provider.shutdown()  # type: ignore[union-attr]  (no collector at :9: a failed export must not raise)


def test_a_failed_connect_is_an_error_span() -> None:
    trace, exporter = _traced({**ON, "OTEL_SERVICE_NAME": "agent-farah"})
    trace.connected(start_ns=time.time_ns(), error="timeout")
    (span,) = exporter.get_finished_spans()  # type: ignore[attr-defined]
    assert span.name == "agent.connect" and span.status.status_code.name == "ERROR" and span.status.description == "timeout"
    assert span.resource.attributes["service.name"] == "agent-farah"
    trace._provider.shutdown()  # type: ignore[union-attr]
