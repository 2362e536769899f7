"""The agent's part of its start's trace: continues the W3C `TRACEPARENT` the orchestrator hands it (env, or a pool
assignment's field) with spans for load, connect and first audio published; exported by OTLP/HTTP when
`OTEL_EXPORTER_OTLP_ENDPOINT` is set and the image carries the OpenTelemetry SDK. Otherwise every call is a no-op,
so the agent never fails or slows down for want of a collector.

Wiring (agent_image/run.py, pool claims; owned by the pool helper):

    trace = AgentTrace.from_env(os.environ)          # at process start: `load` begins at the interpreter's start
    trace.loaded()                                   # the rtc library imported, config read
    with trace.span("connect"): await room.connect(...)
    trace.mark("first_audio_published")              # after the first local audio track is published
    trace.close()                                    # before exit: flush (bounded)

A pool member waits before its assignment: call `AgentTrace.from_traceparent(assignment["traceparent"], env)`
when the assignment arrives; its `load` then covers the claim → assignment received.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

log = logging.getLogger("agent_image.tracing")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
FLUSH_TIMEOUT_MS = 2000


def valid_traceparent(value: str | None) -> str | None:
    """The value when it is a W3C traceparent (version 00, non-zero ids), else None (pure)."""
    m = _TRACEPARENT.match((value or "").strip())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(0)


class AgentTrace:
    def __init__(self, *, tracer: Any = None, provider: Any = None, parent: Any = None, started_ns: int | None = None) -> None:
        self._tracer, self._provider, self._parent = tracer, provider, parent
        self._started_ns = started_ns or time.time_ns()
        self.enabled = tracer is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> AgentTrace:
        return cls.from_traceparent(env.get("TRACEPARENT"), env)

    @classmethod
    def from_traceparent(cls, traceparent: str | None, env: Mapping[str, str]) -> AgentTrace:
        started = time.time_ns()
        if (tp := valid_traceparent(traceparent)) is None or not env.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            log.info("TRACEPARENT given but this image has no OpenTelemetry SDK: no agent spans")
            return cls()
        provider = TracerProvider(resource=Resource.create({"service.name": env.get("OTEL_SERVICE_NAME") or "agent"}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        parent = TraceContextTextMapPropagator().extract({"traceparent": tp})
        return cls(tracer=provider.get_tracer("agent_image"), provider=provider, parent=parent, started_ns=started)

    def loaded(self, attributes: Mapping[str, Any] | None = None) -> None:
        """`load`: process (or assignment) start → ready to connect."""
        self._record("load", start_ns=self._started_ns, attributes=attributes)

    @contextmanager
    def span(self, name: str, attributes: Mapping[str, Any] | None = None) -> Iterator[Any]:
        if not self.enabled:
            with nullcontext() as nothing:
                yield nothing
            return
        with self._tracer.start_as_current_span(name, context=self._parent, attributes=dict(attributes or {})) as span:
            yield span

    def mark(self, name: str, attributes: Mapping[str, Any] | None = None) -> None:
        """An instant (e.g. `first_audio_published`), as a span from the agent's start to now."""
        self._record(name, start_ns=self._started_ns, attributes=attributes)

    def close(self) -> None:
        if self._provider is not None:
            self._provider.force_flush(FLUSH_TIMEOUT_MS)
            self._provider.shutdown()

    def _record(self, name: str, *, start_ns: int, attributes: Mapping[str, Any] | None) -> None:
        if not self.enabled:
            return
        span = self._tracer.start_span(name, context=self._parent, start_time=start_ns, attributes=dict(attributes or {}))
        span.end()
