"""Traces to OpenTelemetry: each finished trace's spans built as the SDK's `ReadableSpan`s (with
the ids the request already propagated) and handed to a `BatchSpanProcessor`, which exports
them over OTLP/HTTP from its own thread. No global tracer provider is set: Ray and vLLM keep
theirs."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from tracing._config import TracingConfig
from tracing._trace import CLIENT, OPERATIONS, SERVER, Span, Trace, parse_traceparent

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExporter

_MASK64 = (1 << 64) - 1


class Tracer:
    """Starts a `Trace` per request and exports the sampled ones. `exporter` replaces the
    OTLP/HTTP one (tests, benches)."""

    def __init__(
        self,
        config: TracingConfig,
        backends: Mapping[str, Mapping[str, str]],
        exporter: SpanExporter | None = None,
    ) -> None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        from opentelemetry.trace import SpanKind

        self.config = config
        self.backends = {name: dict(attributes) for name, attributes in backends.items()}
        self._threshold = int(config.sample_ratio * (1 << 64))
        self._resource = Resource.create({"service.name": config.service_name})
        self._scope = InstrumentationScope("llm-gateway")
        self._kinds = {SERVER: SpanKind.SERVER, CLIENT: SpanKind.CLIENT}
        self._internal = SpanKind.INTERNAL
        exporter = exporter or OTLPSpanExporter(
            endpoint=config.endpoint, timeout=config.export_timeout_s
        )
        self._processor = BatchSpanProcessor(exporter, max_queue_size=config.max_queue)

    def start(self, headers: Mapping[str, str], endpoint: str) -> Trace:
        """The request's trace: the client's (its `traceparent`, sampled as it says) or a new
        one, sampled by its id at `sample_ratio`."""
        parent = parse_traceparent(headers.get("traceparent"))
        if parent is not None:
            trace_id, parent_id, sampled = parent
        else:
            trace_id, parent_id = random.getrandbits(128) or 1, 0
            sampled = (trace_id & _MASK64) < self._threshold
        operation = OPERATIONS.get(endpoint, endpoint)
        return Trace(trace_id, parent_id, sampled, operation, self.backends)

    def export(self, trace: Trace) -> None:
        """Hand a finished trace's spans to the exporter's queue (not sampled: nothing)."""
        if not trace.sampled:
            return
        for span in trace.spans:
            self._processor.on_end(self._readable(trace, span))

    def _readable(self, trace: Trace, span: Span) -> ReadableSpan:
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

        flags = TraceFlags(TraceFlags.SAMPLED)
        context = SpanContext(trace.trace_id, span.span_id, False, flags)
        parent = None
        if span.parent_id:
            remote = span is trace.root and trace.remote_parent
            parent = SpanContext(trace.trace_id, span.parent_id, remote, flags)
        status = Status(StatusCode.ERROR, span.error) if span.error else Status(StatusCode.UNSET)
        attributes: dict[str, Any] = span.attributes
        if span.error:
            attributes = {**attributes, "error.type": span.error}
        return ReadableSpan(
            span.name,
            context=context,
            parent=parent,
            resource=self._resource,
            attributes=attributes,
            kind=self._kinds.get(span.kind, self._internal),
            status=status,
            start_time=span.start_ns,
            end_time=span.end_ns or span.start_ns,
            instrumentation_scope=self._scope,
        )

    def close(self) -> None:
        """Export what is queued, then stop (blocking: at shutdown)."""
        self._processor.shutdown()  # type: ignore[no-untyped-call]
