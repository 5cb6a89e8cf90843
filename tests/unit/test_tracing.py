"""Traces of the pipeline (`tracing:`) over in-process fakes, exported to the SDK's in-memory
exporter: one trace per request with a span per step and per attempt (retries and fallbacks
included), the GenAI attributes, the client's `traceparent` continued and sent on upstream,
sampling, and no prompt text unless asked for."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import orjson
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from deployments import UPSTREAM_HEADERS, Backend, Endpoint, Health
from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from gateway.core.replies import Reply, StreamReply
from gateway.core.tracing import backend_attributes
from tests.helpers import fake_backends
from tracing import Tracer, parse_traceparent

CLIENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CLIENT_SPAN = "00f067aa0ba902b7"
SECRET_PROMPT = "my parcel number is 77-AB-1234"


class Listening(Backend):
    """Wraps a backend and notes the headers each call would send upstream."""

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.sent: list[Mapping[str, str]] = []

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        self.sent.append(UPSTREAM_HEADERS.get())
        return await self.inner.complete(endpoint, body)

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        self.sent.append(UPSTREAM_HEADERS.get())
        async for chunk in self.inner.stream(endpoint, body):
            yield chunk

    async def health(self) -> Health:
        return Health(available=True)


class Traced:
    def __init__(self, tmp_path: Path, **tracing: Any) -> None:
        config = GatewayConfig.load({
            "backends": {
                "good": {"kind": "fake", "model": "good-1",
                         "pricing": {"input_per_mtok": 1, "output_per_mtok": 2}},
                "broken": {"kind": "fake", "model": "broken-1", "fail_status": 503,
                           "retry": {"max_retries": 0}},
            },
            "routes": {"failover": {"candidates": ["broken"], "fallbacks": ["good"]}},
            "tracing": {"enabled": True, **tracing},
            "ledger": {"path": str(tmp_path / "ledger.sqlite")},
            "request_log": {"enabled": False},
        })  # fmt: skip
        backends = fake_backends(config)
        self.listening = {name: Listening(backend) for name, backend in backends.items()}
        self.gateway, _ = build_gateway(config, self.listening, tmp_path)
        self.exporter = InMemorySpanExporter()
        assert self.gateway.tracing is not None
        self.gateway.tracing.tracer = Tracer(
            config.tracing, backend_attributes(config.backends), exporter=self.exporter
        )

    async def call(self, headers: dict[str, str] | None = None, **body: Any) -> Reply | StreamReply:
        body = {"model": "failover", "messages": [{"role": "user", "content": SECRET_PROMPT}],
                **body}  # fmt: skip
        reply = await self.gateway.handle(
            "chat/completions", orjson.dumps(body), headers or {}, "req-1"
        )
        if isinstance(reply, StreamReply):
            try:
                _ = [chunk async for chunk in reply]
            finally:
                await reply.aclose()
        return reply

    async def spans(self) -> list[ReadableSpan]:
        await self.gateway.aclose()  # flushes the exporter's queue
        return list(self.exporter.get_finished_spans())


def by_name(spans: list[ReadableSpan]) -> dict[str, list[ReadableSpan]]:
    found: dict[str, list[ReadableSpan]] = {}
    for span in spans:
        found.setdefault(span.name, []).append(span)
    return found


async def test_one_trace_continues_the_clients_with_a_span_per_step_and_attempt(
    tmp_path: Path,
) -> None:
    traced = Traced(tmp_path)
    parent = f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"
    reply = await traced.call({"traceparent": parent})
    assert isinstance(reply, Reply) and reply.status == 200
    spans = await traced.spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {CLIENT_TRACE}  # type: ignore[union-attr]
    named = by_name(spans)
    (root,) = named["chat chat/completions"]
    assert root.kind is SpanKind.SERVER and root.parent is not None
    assert f"{root.parent.span_id:016x}" == CLIENT_SPAN and root.parent.is_remote
    attributes = dict(root.attributes or {})
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.request.model"] == "failover"
    assert attributes["gen_ai.response.model"] == "good-1"
    assert attributes["gen_ai.usage.output_tokens"] > 0
    assert attributes["gateway.route"] == "failover" and attributes["gateway.backend"] == "good"
    assert attributes["gateway.cost_usd"] > 0 and attributes["gateway.attempts"] == 2
    (route,) = named["gateway.route"]
    assert dict(route.attributes or {})["gateway.chosen"] == "broken"
    failed, answered = named["chat broken-1"][0], named["chat good-1"][0]
    for span in (failed, answered, route):
        assert span.parent is not None and span.parent.span_id == root.context.span_id  # type: ignore[union-attr]
    assert failed.kind is SpanKind.CLIENT and failed.status.status_code is StatusCode.ERROR
    assert answered.status.status_code is StatusCode.UNSET
    assert dict(answered.attributes or {})["gen_ai.provider.name"] == "fake"
    # Each attempt told its upstream to be a child of its own span.
    sent = [h["traceparent"] for name in ("broken", "good") for h in traced.listening[name].sent]
    spans_sent = {f"00-{CLIENT_TRACE}-{s.context.span_id:016x}-01" for s in (failed, answered)}  # type: ignore[union-attr]
    assert set(sent) == spans_sent
    assert all(SECRET_PROMPT not in str(s.attributes) for s in spans)


async def test_a_stream_has_a_relay_span_under_its_attempt(tmp_path: Path) -> None:
    traced = Traced(tmp_path)
    await traced.call(model="good", stream=True)
    named = by_name(await traced.spans())
    (attempt,) = named["chat good-1"]
    (relay,) = named["gateway.relay"]
    assert relay.parent is not None and relay.parent.span_id == attempt.context.span_id  # type: ignore[union-attr]
    assert attempt.start_time <= relay.start_time <= relay.end_time <= attempt.end_time  # type: ignore[operator]


async def test_unsampled_traces_export_nothing_but_still_propagate(tmp_path: Path) -> None:
    traced = Traced(tmp_path, sample_ratio=0.0)
    await traced.call(model="good")
    await traced.call({"traceparent": f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-01"}, model="good")
    spans = await traced.spans()
    assert {f"{s.context.trace_id:032x}" for s in spans} == {CLIENT_TRACE}  # type: ignore[union-attr]
    first, second = traced.listening["good"].sent
    assert first["traceparent"].endswith("-00") and second["traceparent"].endswith("-01")


async def test_prompts_are_in_spans_only_when_asked(tmp_path: Path) -> None:
    traced = Traced(tmp_path, include_prompts=True)
    await traced.call(model="good")
    (root,) = by_name(await traced.spans())["chat chat/completions"]
    assert SECRET_PROMPT in str(dict(root.attributes or {})["gen_ai.input.messages"])


@pytest.mark.parametrize(
    "header",
    ["", "garbage", f"00-{'0' * 32}-{CLIENT_SPAN}-01", f"00-{CLIENT_TRACE}-{'0' * 16}-01",
     f"ff-{CLIENT_TRACE}-{CLIENT_SPAN}-01", f"00-{CLIENT_TRACE}-{CLIENT_SPAN}"],
)  # fmt: skip
def test_a_malformed_traceparent_starts_a_new_trace(header: str) -> None:
    assert parse_traceparent(header) is None


def test_a_traceparent_is_read() -> None:
    parsed = parse_traceparent(f"00-{CLIENT_TRACE}-{CLIENT_SPAN}-00")
    assert parsed == (int(CLIENT_TRACE, 16), int(CLIENT_SPAN, 16), False)
