"""The Jaeger harness the tracing tests stand on: a span sent with the OpenTelemetry SDK over OTLP comes back
from the real collector's query API, with its parent link, attributes and service name intact."""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator

import httpx
import pytest
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from devtools.jaeger import Jaeger, running_jaeger, start_jaeger


@pytest.fixture(scope="module")
def jaeger() -> Iterator[Jaeger]:
    with running_jaeger() as j:
        yield j


def test_span_sent_over_otlp_is_read_back_by_service_and_operation(jaeger: Jaeger) -> None:
    service = f"harness-{secrets.token_hex(3)}"  # unique: nothing else in this collector can match it
    provider = TracerProvider(resource=Resource.create({"service.name": service}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=f"{jaeger.otlp_http_endpoint}/v1/traces")))
    tracer = provider.get_tracer("test_jaeger_harness")
    with tracer.start_as_current_span("trigger", attributes={"agent.slug": "farah"}) as parent:
        with tracer.start_as_current_span("engine.create") as child:
            pass
    provider.shutdown()  # flushes; SimpleSpanProcessor has already sent each span on end

    spans = jaeger.spans(service, operation="trigger")
    by_name = {s["operationName"]: s for s in spans}
    assert set(by_name) == {"trigger", "engine.create"}, spans
    trace_id = format(parent.get_span_context().trace_id, "032x")
    assert {s["traceID"] for s in spans} == {trace_id}
    assert by_name["engine.create"]["spanID"] == format(child.get_span_context().span_id, "016x")
    refs = by_name["engine.create"]["references"]
    assert refs == [{"refType": "CHILD_OF", "traceID": trace_id, "spanID": format(parent.get_span_context().span_id, "016x")}]
    assert {"key": "agent.slug", "type": "string", "value": "farah"} in by_name["trigger"]["tags"]
    assert {s["serviceName"] for s in spans} == {service}
    assert service in jaeger.services()


def test_unknown_service_has_no_spans_and_every_listener_is_loopback(jaeger: Jaeger) -> None:
    assert jaeger.spans(f"never-sent-{secrets.token_hex(3)}", timeout_s=0.5) == []
    # The harness binds 127.0.0.1 only: the same ports on another local address of this machine refuse.
    with httpx.Client(timeout=2) as client:
        assert client.get(f"{jaeger.query_url}/api/services").status_code == 200
    listening = {int(line.split()[1].split(":")[1], 16): line.split()[1].split(":")[0] for line in _tcp_listeners()}
    for port in (jaeger.otlp_grpc_port, jaeger.otlp_http_port, jaeger.query_port, jaeger.health_port):
        assert listening.get(port) == "0100007F", f"port {port} listens on {listening.get(port)} (want 127.0.0.1)"


def _tcp_listeners() -> list[str]:
    """IPv4 sockets in LISTEN state (state 0A), from /proc: which address each port is bound to."""
    with open("/proc/net/tcp") as f:
        return [line for line in f.readlines()[1:] if line.split()[3] == "0A"]


def test_stop_ends_the_process_and_frees_its_ports() -> None:
    started = time.monotonic()
    j = start_jaeger()
    ready_s = time.monotonic() - started
    try:
        assert j.proc.poll() is None
    finally:
        j.stop()
        shutil.rmtree(j.workdir, ignore_errors=True)
    assert j.proc.returncode is not None
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{j.query_url}/api/services", timeout=2)
    print(f"\njaeger ready in {ready_s:.2f}s")
