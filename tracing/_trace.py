"""One request's trace, kept as plain records while the request runs (a few attribute writes
per step) and turned into OpenTelemetry spans only when it is exported (`Tracer`)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

SERVER, CLIENT, INTERNAL = "server", "client", "internal"
# GenAI semantic conventions: `gen_ai.operation.name` of each client API.
OPERATIONS = {
    "chat/completions": "chat",
    "messages": "chat",
    "responses": "chat",
    "completions": "text_completion",
    "embeddings": "embeddings",
}


@dataclass(slots=True)
class Span:
    """One span of a trace: ids, times in ns since the epoch, attributes, an error type."""

    name: str
    span_id: int
    parent_id: int  # 0: none (the root span of a trace that came with no parent)
    kind: str
    start_ns: int
    end_ns: int = 0
    attributes: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def new_span_id() -> int:
    return random.getrandbits(64) or 1


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """(trace id, parent span id, sampled) of a W3C `traceparent` header; None if it is
    missing or malformed (a new trace starts then, as the spec says)."""
    if not value or len(value) < 55:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4 or parts[0] == "ff" or len(parts[0]) != 2:
        return None
    if len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    try:
        trace_id, parent_id, flags = int(parts[1], 16), int(parts[2], 16), int(parts[3], 16)
    except ValueError:
        return None
    if not trace_id or not parent_id:
        return None
    return trace_id, parent_id, bool(flags & 1)


class Trace:
    """A request's spans: the root (the request), its steps and its backend attempts. Not
    thread-safe: one request's steps run on one event loop."""

    __slots__ = ("backends", "operation", "remote_parent", "root", "sampled", "spans", "trace_id")

    def __init__(
        self,
        trace_id: int,
        parent_id: int,
        sampled: bool,
        operation: str,
        backends: Mapping[str, Mapping[str, str]],
    ) -> None:
        self.trace_id = trace_id
        self.sampled = sampled
        self.remote_parent = parent_id != 0
        self.operation = operation
        self.backends = backends  # name -> GenAI attributes of its calls (model, provider)
        self.root = Span(f"{operation} gateway", new_span_id(), parent_id, SERVER, time.time_ns())
        self.spans = [self.root]

    def begin(self, name: str, kind: str = INTERNAL, parent: Span | None = None) -> Span:
        span = Span(name, new_span_id(), (parent or self.root).span_id, kind, time.time_ns())
        self.spans.append(span)
        return span

    @staticmethod
    def end(span: Span, error: str | None = None) -> None:
        span.end_ns = time.time_ns()
        span.error = span.error or error

    @contextlib.contextmanager
    def step(self, name: str) -> Iterator[Span]:
        """A pipeline step (`gateway.auth`, `gateway.route`, ...) as a child of the request."""
        span = self.begin(name)
        try:
            yield span
        except BaseException as exc:
            span.error = getattr(exc, "code", None) or type(exc).__name__
            raise
        finally:
            span.end_ns = time.time_ns()

    def attempt(self, backend: str, number: int) -> Span:
        """A call to a backend (a CLIENT span named as GenAI spans are: operation, model)."""
        call = self.backends.get(backend, {})
        model = call.get("gen_ai.request.model", backend)
        span = self.begin(f"{self.operation} {model}", CLIENT)
        span.attributes.update(call)
        span.attributes["gen_ai.operation.name"] = self.operation
        span.attributes["gateway.backend"] = backend
        span.attributes["gateway.attempt"] = number
        return span

    def traceparent(self, span: Span) -> str:
        """The W3C header that makes an upstream's spans children of `span`."""
        flags = "01" if self.sampled else "00"
        return f"00-{self.trace_id:032x}-{span.span_id:016x}-{flags}"


_NO_STEP: contextlib.nullcontext[None] = contextlib.nullcontext()


def step(trace: Trace | None, name: str) -> contextlib.AbstractContextManager[Any]:
    """`trace.step(name)`, or nothing at all where the request is not traced."""
    return _NO_STEP if trace is None else trace.step(name)
