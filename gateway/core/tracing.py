"""Traces of the gateway's requests (`tracing:`), as an observer: a trace starts with the
request, each pipeline step and backend attempt adds its span as it runs (`step`,
`Attempt`), and when the request is finished its root span takes what the record says (the
GenAI attributes, cost, route, backend, cache, spill-over) and the trace is exported."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from deployments import BackendConfig
from gateway.core.attempts import Observer
from llmops import RequestRecord
from router import Decision
from tracing import Trace, Tracer, TracingConfig

# A backend kind's `gen_ai.provider.name` (the GenAI conventions' well-known values).
PROVIDERS = {"openai": "openai", "anthropic": "anthropic", "vllm": "vllm", "fake": "fake"}


def backend_attributes(backends: Mapping[str, BackendConfig]) -> dict[str, dict[str, str]]:
    """What every call to each backend says of itself: its model and provider."""
    return {
        name: {
            "gen_ai.request.model": backend.model,
            "gen_ai.provider.name": PROVIDERS.get(backend.kind, backend.kind),
        }
        for name, backend in backends.items()
    }


def decision_attributes(decision: Decision) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "gateway.chosen": decision.chosen,
        "gateway.task": decision.task,
        "gateway.candidates": list(decision.attempts),
    }
    if decision.route:
        attributes["gateway.route"] = decision.route
    if decision.policy:
        attributes["gateway.policy"] = decision.policy
    if decision.spillover is not None:
        attributes["gateway.spillover"] = decision.spillover[1]
    return attributes


class Tracing(Observer):
    """Starts each request's trace and exports it when the request is finished."""

    def __init__(self, config: TracingConfig, tracer: Tracer) -> None:
        self.config = config
        self.tracer = tracer

    def start(self, headers: Mapping[str, str], endpoint: str) -> Trace:
        trace = self.tracer.start(headers, endpoint)
        trace.root.name = f"{trace.operation} {endpoint}"
        trace.root.attributes["gen_ai.operation.name"] = trace.operation
        return trace

    def routed(self, trace: Trace | None, target: str, body: Mapping[str, Any]) -> None:
        """What the request asked for, once routed (and its prompt as it will be sent,
        after the guardrails, where the config asks for prompts in traces)."""
        if trace is None:
            return
        trace.root.attributes["gen_ai.request.model"] = target
        if self.config.include_prompts:
            prompt = body.get("messages") or body.get("prompt") or body.get("input")
            trace.root.attributes["gen_ai.input.messages"] = orjson.dumps(prompt).decode()

    def request_finished(self, record: RequestRecord) -> None:
        trace = record.trace
        if trace is None:
            return
        record.trace = None  # finished once: a record is written to every sink after this
        root = trace.root
        root.attributes.update(root_attributes(record, self.config.include_prompts))
        answered_by = trace.backends.get(record.backend or "", {}).get("gen_ai.request.model")
        if answered_by:
            root.attributes["gen_ai.response.model"] = answered_by
        if record.status >= 400:
            root.error = record.error_code or str(record.status)
        Trace.end(root)
        self.tracer.export(trace)

    def close(self) -> None:
        self.tracer.close()


def root_attributes(record: RequestRecord, prompts: bool) -> dict[str, Any]:
    """The request span's attributes from its finished record (no value is None: OTLP has
    no null)."""
    values: dict[str, Any] = {
        "gen_ai.usage.input_tokens": record.prompt_tokens,
        "gen_ai.usage.output_tokens": record.completion_tokens,
        "gateway.request_id": record.request_id,
        "gateway.endpoint": record.endpoint,
        "gateway.stream": record.stream,
        "gateway.route": record.route,
        "gateway.task": record.task,
        "gateway.backend": record.backend,
        "gateway.attempts": len(record.attempts),
        "gateway.cost_usd": record.cost_usd,
        "gateway.cache": record.cache,
        "gateway.spillover": record.spillover,
        "gateway.continued_from": record.continued_from,
        "gateway.guardrail": record.guardrail,
        "gateway.ttft_ms": record.ttft_ms,
        "http.response.status_code": record.status,
    }
    if record.key_id:
        values["gateway.key_id"] = record.key_id  # an id, never the key
    if prompts and record.response_text:
        values["gen_ai.output.messages"] = record.response_text
    return {name: value for name, value in values.items() if value is not None}
