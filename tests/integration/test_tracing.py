"""OpenTelemetry traces through real Serve: an app with `tracing:` on exports to an OTLP/HTTP
receiver in this test (it decodes the protobuf requests as a collector would), and the
capture upstream (tests/standins/capture_upstream.py) shows the trace id it was sent, by a
proxy in the ingress and by one in its own deployment (across a Serve handle)."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import openai
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from tests.helpers import wait_until
from tests.integration.conftest import Stack, warmed

pytestmark = pytest.mark.integration
PREFIX = "/traced"
CLIENT_TRACE = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
PROMPT = "Trace this question about wombats."


class Receiver:
    """An OTLP/HTTP traces endpoint: every span it is sent, decoded."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"]))
                receiver.take(ExportTraceServiceRequest.FromString(body))
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def take(self, request: ExportTraceServiceRequest) -> None:
        for resource in request.resource_spans:
            service = {a.key: a.value.string_value for a in resource.resource.attributes}
            for scope in resource.scope_spans:
                for span in scope.spans:
                    self.spans.append({
                        "service": service.get("service.name"),
                        "trace": span.trace_id.hex(),
                        "id": span.span_id.hex(),
                        "parent": span.parent_span_id.hex(),
                        "name": span.name,
                        "kind": span.kind,
                        "error": span.status.code == 2,
                        "attributes": {a.key: _value(a.value) for a in span.attributes},
                    })  # fmt: skip

    def trace(self, trace_id: str, count: int) -> list[dict[str, Any]]:
        def found() -> list[dict[str, Any]]:
            return [span for span in self.spans if span["trace"] == trace_id]

        wait_until(lambda: len(found()) >= count, 30, f"{count} spans of trace {trace_id}")
        return found()


def _value(value: Any) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


@pytest.fixture(scope="module")
def traced(stack: Stack) -> Iterator[tuple[str, Receiver]]:
    from ray import serve

    from gateway.app import build_app

    receiver = Receiver()
    capture = stack.stubs["capture"][0]
    config = {
        "backends": {
            "near": {"kind": "openai", "model": "capture", "base_url": f"{capture}/v1"},
            "far": {"kind": "openai", "model": "capture", "base_url": f"{capture}/v1",
                    "placement": "deployment", "deployment": {"num_replicas": 1}},
            "failing": {"kind": "fake", "model": "failing-1", "fail_status": 503,
                        "retry": {"max_retries": 0}},
        },
        "routes": {"fallback": {"candidates": ["failing"], "fallbacks": ["near"]}},
        "tracing": {"enabled": True, "endpoint": receiver.url, "service_name": "traced-test"},
        "ledger": {"path": str(stack.logs / "traced-ledger.sqlite")},
        "request_log": {"enabled": False},
    }  # fmt: skip
    root = stack.root_url + PREFIX
    serve.run(build_app(config), name="traced", route_prefix=PREFIX, blocking=False)
    wait_until(lambda: warmed(root), 300, "the traced app")
    yield root, receiver
    serve.delete("traced")
    receiver.server.shutdown()


def sent_traceparents(stack: Stack) -> list[str]:
    capture = httpx.get(f"{stack.stubs['capture'][0]}/_capture").text
    return re.findall(r"traceparent: (00-[0-9a-f]{32}-[0-9a-f]{16}-0[01])", capture)


@pytest.mark.parametrize("backend", ["near", "far"])
def test_a_clients_trace_is_continued_and_sent_upstream(
    stack: Stack, traced: tuple[str, Receiver], backend: str
) -> None:
    root_url, receiver = traced
    httpx.post(f"{stack.stubs['capture'][0]}/_reset")
    trace_id = CLIENT_TRACE[:-2] + ("01" if backend == "near" else "02")
    client = openai.OpenAI(base_url=f"{root_url}/v1", api_key="unused", max_retries=0)
    answer = client.chat.completions.create(
        model=backend, messages=[{"role": "user", "content": PROMPT}],
        extra_headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"},
    )  # fmt: skip
    assert answer.choices[0].message.content
    spans = receiver.trace(trace_id, 3)
    (request,) = [s for s in spans if s["parent"] == CLIENT_SPAN]
    assert request["kind"] == 2 and request["service"] == "traced-test"  # SERVER
    assert request["attributes"]["gen_ai.operation.name"] == "chat"
    assert request["attributes"]["gen_ai.request.model"] == backend
    assert request["attributes"]["gen_ai.usage.output_tokens"] > 0
    assert request["attributes"]["gateway.backend"] == backend
    (call,) = [s for s in spans if s["name"] == "chat capture"]
    assert call["kind"] == 3 and call["parent"] == request["id"]  # CLIENT
    assert {"gateway.route"} <= {s["name"] for s in spans}
    # The upstream was told to be a child of the attempt's span.
    assert sent_traceparents(stack) == [f"00-{trace_id}-{call['id']}-01"]
    assert all(PROMPT not in str(s["attributes"]) for s in spans)


def test_fallbacks_and_streams_are_spans_of_one_trace(
    stack: Stack, traced: tuple[str, Receiver]
) -> None:
    root_url, receiver = traced
    trace_id = CLIENT_TRACE[:-2] + "03"
    with httpx.stream(
        "POST", f"{root_url}/v1/chat/completions",
        json={"model": "fallback", "stream": True,
              "messages": [{"role": "user", "content": PROMPT}]},
        headers={"traceparent": f"00-{trace_id}-{CLIENT_SPAN}-01"}, timeout=30,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert b"[DONE]" in b"".join(response.iter_bytes())
    spans = receiver.trace(trace_id, 5)
    names = [s["name"] for s in spans]
    failed = next(s for s in spans if s["name"] == "chat failing-1")
    called = next(s for s in spans if s["name"] == "chat capture")
    relay = next(s for s in spans if s["name"] == "gateway.relay")
    assert failed["error"] and not called["error"] and relay["parent"] == called["id"]
    request = next(s for s in spans if s["parent"] == CLIENT_SPAN)
    assert request["attributes"]["gateway.attempts"] == 2 and "gateway.route" in names
