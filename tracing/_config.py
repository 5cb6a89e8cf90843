"""The `tracing:` section: OpenTelemetry traces of each request, sent over OTLP/HTTP."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TracingConfig(BaseModel):
    """One trace per request: a span per pipeline step and per backend attempt, with the
    OpenTelemetry GenAI attributes; W3C `traceparent` taken from the client and sent on to
    every upstream. Off by default."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(default=False, description="Record and export traces.")
    endpoint: str = Field(
        default="http://127.0.0.1:4318/v1/traces",
        description="OTLP/HTTP traces endpoint (a collector, Jaeger, Tempo, ...).",
    )
    sample_ratio: float = Field(
        default=1.0,
        ge=0.0,
        le=1.0,
        description="Share of new traces recorded (by trace id). A client's `traceparent` "
        "decides for its own requests (its sampled flag).",
    )
    service_name: str = Field(default="llm-gateway", description="`service.name` of the spans.")
    include_prompts: bool = Field(
        default=False,
        description="Put the request's messages and the answer's text on the request span "
        "(as sent upstream: after guardrails masked them). Off: no prompt text in any span.",
    )
    export_timeout_s: float = Field(
        default=5.0, gt=0, description="How long one export may take before it is dropped."
    )
    max_queue: int = Field(
        default=8192, ge=64, description="Spans waiting for export; more are dropped, counted."
    )
