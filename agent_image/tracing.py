"""The agent's part of its start's trace: spans `agent.load`, `agent.connect` and `agent.first_audio`, children of
the W3C `TRACEPARENT` the orchestrator hands it (env for a cold start, the assignment for a pool claim).

On only when that context and an OTLP endpoint (`OTEL_EXPORTER_OTLP_ENDPOINT`, or `..._TRACES_ENDPOINT`) are both in
the agent's environment: then the OpenTelemetry SDK is imported and spans go out over OTLP/HTTP. Otherwise no module
of OpenTelemetry is imported and every call returns at once, so an agent never fails or slows down for want of a
collector. The endpoint is read from the mapping given (a pool member's assignment is not in os.environ).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger("agent_image.tracing")

_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
FLUSH_TIMEOUT_MS = 2000  # at exit: the spans are normally gone already (flushed after the first audio)
EXPORT_TIMEOUT_S = 5.0  # one OTLP request; the exporter runs on the SDK's thread, never on the agent's loop


def valid_traceparent(value: str | None) -> str | None:
    """The value when it is a W3C traceparent (version 00, non-zero ids), else None (pure)."""
    m = _TRACEPARENT.match((value or "").strip())
    if m is None or set(m.group(1)) == {"0"} or set(m.group(2)) == {"0"}:
        return None
    return m.group(0)


def traces_endpoint(env: Mapping[str, str]) -> str | None:
    """The OTLP/HTTP traces URL the standard variables give (pure): the signal's own as is, the base + /v1/traces."""
    if own := env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip():
        return own
    if base := env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip():
        return base.rstrip("/") + "/v1/traces"
    return None


def preload_sdk() -> None:
    """Import what `AgentTrace.from_env` will need (a pool member told tracing is on, while it waits)."""
    try:
        from opentelemetry.exporter.otlp.proto.http import trace_exporter  # noqa: F401
        from opentelemetry.sdk import trace  # noqa: F401
    except ImportError:
        pass


class AgentTrace:
    """The agent's spans of one start; `AgentTrace()` is the off state (every method a no-op)."""

    def __init__(self, *, tracer: Any = None, provider: Any = None, parent: Any = None, started_ns: int | None = None,
                 attributes: Mapping[str, str] | None = None) -> None:
        self._tracer, self._provider, self._parent = tracer, provider, parent
        self._started_ns = started_ns or time.time_ns()
        self._attributes = dict(attributes or {})
        self._audio_marked = False
        self.enabled = tracer is not None

    @classmethod
    def from_env(cls, env: Mapping[str, str], *, started_ns: int | None = None,
                 attributes: Mapping[str, str] | None = None) -> AgentTrace:
        """`started_ns`: when `agent.load` began (the entry point's start; a pool member's assignment received)."""
        started = started_ns or time.time_ns()
        if (tp := valid_traceparent(env.get("TRACEPARENT"))) is None or (endpoint := traces_endpoint(env)) is None:
            return cls()
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
            from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
        except ImportError:
            log.info("a trace context and an OTLP endpoint were given but this image has no OpenTelemetry SDK: no agent spans")
            return cls()
        service = env.get("OTEL_SERVICE_NAME", "").strip() or "agent"
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=EXPORT_TIMEOUT_S)))
        parent = TraceContextTextMapPropagator().extract({"traceparent": tp})
        log.info("tracing on: spans continue the start's trace, exported to %s", endpoint)
        return cls(tracer=provider.get_tracer("agent_image"), provider=provider, parent=parent, started_ns=started,
                   attributes=attributes)

    def loaded(self, **attributes: str) -> None:
        """`agent.load`: the entry point (or the assignment) → ready to connect."""
        self._record("agent.load", start_ns=self._started_ns, end_ns=time.time_ns(), attributes=attributes)

    def connected(self, *, start_ns: int, error: str | None = None) -> None:
        """`agent.connect` (livekit-agents calls it `room_connect`): the signal connection, from `start_ns` to now."""
        self._record("agent.connect", start_ns=start_ns, end_ns=time.time_ns(), error=error, attributes={})

    def first_audio(self, *, joined_ns: int, track: str) -> None:
        """`agent.first_audio`: joined → the first local audio track published (once); then flush, off the loop."""
        if not self.enabled or self._audio_marked:
            return
        self._audio_marked = True
        self._record("agent.first_audio", start_ns=joined_ns, end_ns=time.time_ns(), attributes={"livekit.track": track})
        # The start's spans are all made: send them now rather than at the batch's next tick (5 s by default).
        threading.Thread(target=self._provider.force_flush, args=(FLUSH_TIMEOUT_MS,), daemon=True,
                         name="agent-trace-flush").start()

    def close(self) -> None:
        """Before exit: send what is left, bounded (the process ends with os._exit, which runs no atexit hook)."""
        if self._provider is not None:
            self._provider.force_flush(FLUSH_TIMEOUT_MS)

    def _record(self, name: str, *, start_ns: int, end_ns: int, attributes: Mapping[str, str],
                error: str | None = None) -> None:
        if not self.enabled:
            return
        from opentelemetry.trace import Status, StatusCode

        span = self._tracer.start_span(name, context=self._parent, start_time=start_ns,
                                       attributes={**self._attributes, **attributes})
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, error))
        span.end(end_time=end_ns)
