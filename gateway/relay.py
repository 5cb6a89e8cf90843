"""Relaying a backend's SSE stream to the client: pass-through, a total deadline, live stats,
and the stream's usage for the cost ledger."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import orjson

from deployments import BackendError
from gateway.accounting import Trace
from gateway.resilience import timeout_error
from gateway.routing import GatewayRouter

logger = logging.getLogger("ray.serve")
_USAGE = b'"usage":{'  # compact JSON, as vLLM, OpenAI and our own translators write it


def take_usage(events: bytes, strip: bool) -> tuple[dict[str, object] | None, bytes]:
    """The `usage` object of the SSE events in `events`, and the events without the final
    usage-only chunk when `strip` (the client did not ask for it; the ledger did)."""
    usage: dict[str, object] | None = None
    kept = []
    for event in events.split(b"\n\n"):
        if _USAGE in event and event.startswith(b"data: {"):
            try:
                data = orjson.loads(event[6:])
            except orjson.JSONDecodeError:
                kept.append(event)
                continue
            if isinstance(data.get("usage"), dict):
                usage = data["usage"]
            if strip and not data.get("choices"):
                continue
        kept.append(event)
    return usage, b"\n\n".join(kept)


class _Deadline:
    """Cancels the relaying task if the deadline passes while it waits on the upstream.

    One timer per stream instead of a timeout per chunk: chunks cost nothing extra.
    """

    def __init__(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self.task = asyncio.current_task()
        self.waiting = False
        self.expired = False
        self._timer = loop.call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.waiting and self.task is not None:
            self.task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()


class _Framer:
    """Passes on whole SSE events only. A partial event is of no use to a client yet, so
    holding its bytes until the rest arrives delays nothing it could act on."""

    def __init__(self) -> None:
        self.tail = b""

    def __call__(self, chunk: bytes) -> bytes:
        data = self.tail + chunk if self.tail else chunk
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self.tail = data
            return b""
        self.tail = data[cut + 2 :]
        return data[: cut + 2]


@dataclass(slots=True)
class StreamBooks:
    """Who gets told what about a stream."""

    name: str
    routing: GatewayRouter
    started: float
    total_s: float
    on_failure: Callable[[BackendError], None]
    trace: Trace | None = None
    strip_usage: bool = False  # the gateway asked upstream for usage, the client did not
    on_done: Callable[[Trace], None] | None = None


async def relay(
    first: bytes, rest: AsyncIterator[bytes], books: StreamBooks
) -> AsyncIterator[bytes]:
    """Pass events through as they come; a failure or the total timeout mid-stream ends the
    stream with an SSE error event (tokens already sent cannot be taken back)."""
    name, trace = books.name, books.trace
    first_at = time.perf_counter()
    frame = _Framer()
    events, usage, completed = 0, None, False
    deadline = _Deadline(max(0.0, books.total_s - (first_at - books.started)))

    def account(chunk: bytes) -> bytes:
        nonlocal events, usage
        ready = frame(chunk)
        if _USAGE in ready:
            found, ready = take_usage(ready, books.strip_usage)
            usage = found or usage
        events += ready.count(b"data: {")
        return ready

    try:
        if ready := account(first):
            yield ready
        while True:
            if deadline.expired:
                raise timeout_error(name, "the end of the stream", books.total_s)
            deadline.waiting = True
            try:
                chunk = await anext(rest)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if deadline.expired and deadline.task is not None and deadline.task.uncancel() == 0:
                    raise timeout_error(name, "the end of the stream", books.total_s) from None
                raise
            finally:
                deadline.waiting = False
            if ready := account(chunk):
                yield ready
        if frame.tail:
            yield frame.tail
        completed = True
    except BackendError as exc:
        logger.warning("backend %s failed mid-stream: %s", name, exc.message)
        books.on_failure(exc)
        if trace is not None:
            trace.status, trace.error_code = exc.status, exc.code or "stream_broken"
        yield b"data: " + orjson.dumps(exc.to_dict()) + b"\n\ndata: [DONE]\n\n"
    finally:
        deadline.cancel()
        books.routing.finished(name)
        await rest.aclose()  # type: ignore[attr-defined]
        ended = time.perf_counter()
        tokens = usage.get("completion_tokens") if usage else None
        if not isinstance(tokens, int):
            tokens = max(1, events - 1)  # no usage from upstream: one event per token
        if completed:
            books.routing.record_stream(
                name, (first_at - books.started) * 1000, (ended - first_at) * 1000, tokens
            )
        if trace is not None and books.on_done is not None:
            trace.ttft_ms = (first_at - books.started) * 1000
            if not completed and trace.status == 200:
                trace.status, trace.error_code = 499, "client_disconnected"
            trace.take_usage(usage)
            if trace.usage_source == "none":
                trace.completion_tokens = tokens
            books.on_done(trace)
