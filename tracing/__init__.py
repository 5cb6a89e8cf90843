"""OpenTelemetry traces of the gateway's requests: a `Trace` per request, kept as plain
records while it runs, exported as OTLP spans by a `Tracer` when it ends. Imports none of the
project's packages; the gateway fills the spans in."""

from tracing._config import TracingConfig
from tracing._export import Tracer
from tracing._trace import (
    CLIENT,
    INTERNAL,
    OPERATIONS,
    SERVER,
    Span,
    Trace,
    parse_traceparent,
    step,
)

__all__ = [
    "CLIENT",
    "INTERNAL",
    "OPERATIONS",
    "SERVER",
    "Span",
    "Trace",
    "Tracer",
    "TracingConfig",
    "parse_traceparent",
    "step",
]
