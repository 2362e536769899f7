"""The agent's trace continuation: only a valid W3C traceparent plus an endpoint turns it on; else a silent no-op."""

from __future__ import annotations

import pytest

from agent_image.tracing import AgentTrace, valid_traceparent

TP = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(("value", "ok"), [
    (TP, True), (f" {TP} ", True), (None, False), ("", False), ("01-" + TP[3:], False),
    ("00-" + "0" * 32 + "-b7ad6b7169203331-01", False), ("00-0af7651916cd43dd8448eb211c80319c-" + "0" * 16 + "-01", False),
    ("00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01", False), ("garbage; rm -rf /", False),
])
def test_only_a_w3c_traceparent_is_continued(value: str | None, ok: bool) -> None:
    assert (valid_traceparent(value) is not None) is ok


def test_without_an_endpoint_or_context_every_call_is_a_no_op() -> None:
    for env in ({}, {"TRACEPARENT": TP}, {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}):
        trace = AgentTrace.from_env(env)
        assert trace.enabled is False
        trace.loaded()
        with trace.span("connect"):
            pass
        trace.mark("first_audio_published")
        trace.close()


def test_with_context_and_endpoint_spans_join_the_orchestrators_trace() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    trace = AgentTrace.from_env({"TRACEPARENT": TP, "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    assert trace.enabled
    exporter = InMemorySpanExporter()
    trace._provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.loaded()
    with trace.span("connect"):
        pass
    trace.mark("first_audio_published")
    spans = {s.name: s for s in exporter.get_finished_spans()}
    assert set(spans) == {"load", "connect", "first_audio_published"}
    for s in spans.values():
        assert f"{s.context.trace_id:032x}" == TP.split("-")[1] and f"{s.parent.span_id:016x}" == TP.split("-")[2]
    trace._provider.shutdown()  # no collector at :9; the batch exporter's failure must not raise
