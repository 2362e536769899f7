"""OpenTelemetry tracing from the standard OTEL_* variables: off by default, and then nothing of the SDK is loaded.

The one adapter of the OpenTelemetry SDK (import-linter keeps it here). Turned on by an OTLP endpoint
(`OTEL_EXPORTER_OTLP_ENDPOINT` or `..._TRACES_ENDPOINT`) or `OTEL_TRACES_EXPORTER=otlp`; turned off by
`OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`. Sampler, headers, timeouts, service name and
resource attributes are the SDK's own OTEL_* variables. The exporter speaks OTLP over HTTP/protobuf
(port 4318), the protocol the specification names as the default; gRPC would pull in grpcio for nothing.

When off, `Tracing.enabled` is False and callers (observability.starts, the API middleware) never call
into OpenTelemetry at all: no span object, no context, no id is made.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from orchestrator.core.errors import ConfigurationError

log = logging.getLogger(__name__)

SERVICE_NAME = "agent-orchestrator"
_ENDPOINTS = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


def tracing_wanted(env: Mapping[str, str]) -> bool:
    """Whether the standard variables ask for traces to be exported (pure)."""
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter in ("none", ""):
        return exporter == "" and any(env.get(name, "").strip() for name in _ENDPOINTS)
    if exporter != "otlp":
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER={exporter!r} is not supported here; use 'otlp' or 'none'")
    return True


def check_protocol(env: Mapping[str, str]) -> None:
    protocol = (env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf").strip()
    if protocol != "http/protobuf":
        raise ConfigurationError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported: the orchestrator exports OTLP over "
            "http/protobuf (a collector's port 4318)"
        )


class Tracing:
    """A tracer and its provider when on; a flag that says `off` otherwise. Built once per engine."""

    def __init__(self, provider: Any = None) -> None:
        self._provider = provider
        self._tracer = provider.get_tracer("orchestrator") if provider is not None else None
        self.enabled = provider is not None
        self.provider = provider  # FastAPI's own request spans go to it (api/app.py)

    @classmethod
    def off(cls) -> Tracing:
        return cls(None)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, exporter: Any = None) -> Tracing:
        """Tracing as the OTEL_* variables say (`exporter`: a span exporter to use instead of OTLP, for the bench)."""
        env = os.environ if env is None else env
        if exporter is None and not tracing_wanted(env):
            return cls.off()
        check_protocol(env)
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        if exporter is None:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()  # endpoint, headers, timeout: from the OTEL_EXPORTER_OTLP_* variables
        service = env.get("OTEL_SERVICE_NAME") or SERVICE_NAME
        provider = TracerProvider(resource=Resource.create({"service.name": service}))
        provider.add_span_processor(BatchSpanProcessor(exporter))  # batched off the request path
        log.info("tracing on: spans exported by OTLP", extra={"service": service})
        return cls(provider)

    @contextmanager
    def span(self, name: str, *, attributes: Mapping[str, Any] | None = None, parent: Any = None,
             start_ns: int | None = None) -> Iterator[Any]:
        """A span made current for the block (child of the current one, or of `parent`: a context from `extract`);
        `start_ns`: it began earlier than the block (a dispatched job's start is its availability request)."""
        assert self._tracer is not None, "callers check `enabled` first"
        from opentelemetry.trace import Status, StatusCode

        with self._tracer.start_as_current_span(
            name, context=parent, attributes=dict(attributes or {}), record_exception=False, set_status_on_exception=False,
            start_time=start_ns,
        ) as span:
            try:
                yield span
            except BaseException as exc:
                span.set_status(Status(StatusCode.ERROR, getattr(exc, "code", type(exc).__name__)))
                raise

    def record_span(self, name: str, *, parent: Any, start_ns: int, end_ns: int, attributes: Mapping[str, Any]) -> None:
        """A span measured outside a block (the agent's join, seen later by a webhook), under a saved span."""
        assert self._tracer is not None
        from opentelemetry import trace

        span = self._tracer.start_span(
            name, context=trace.set_span_in_context(parent), start_time=start_ns, attributes=dict(attributes),
        )
        span.end(end_time=end_ns)

    @staticmethod
    def current_span() -> Any:
        from opentelemetry import trace

        return trace.get_current_span()

    @staticmethod
    def traceparent(span: Any) -> str | None:
        """The W3C `traceparent` of a span, handed to an agent so it continues the trace."""
        ctx = span.get_span_context()
        if not ctx.is_valid:
            return None
        return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"

    @staticmethod
    def trace_id(span: Any) -> str | None:
        ctx = span.get_span_context()
        return f"{ctx.trace_id:032x}" if ctx.is_valid else None

    def shutdown(self) -> None:
        """Flush what is batched and stop the exporter (engine stop)."""
        if self._provider is not None:
            self._provider.shutdown()
