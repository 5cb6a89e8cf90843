"""Relaying a backend's SSE stream to the client: pass-through, a total deadline, live stats."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable

import orjson

from deployments import BackendError
from gateway.resilience import timeout_error
from gateway.routing import GatewayRouter

logger = logging.getLogger("ray.serve")


def completion_tokens(chunk: bytes) -> int | None:
    """`usage.completion_tokens` from the SSE event in `chunk` that carries it, if any."""
    if b'"usage"' not in chunk:  # almost every chunk: no split, no parse
        return None
    for event in chunk.split(b"\n\n"):
        if b'"usage"' in event and event.startswith(b"data: {"):
            try:
                usage = orjson.loads(event[6:]).get("usage") or {}
            except orjson.JSONDecodeError:
                continue
            if isinstance(usage.get("completion_tokens"), int):
                return int(usage["completion_tokens"])
    return None


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


async def relay(
    first: bytes,
    rest: AsyncIterator[bytes],
    *,
    name: str,
    routing: GatewayRouter,
    started: float,
    total_s: float,
    on_failure: Callable[[BackendError], None],
) -> AsyncIterator[bytes]:
    """Pass chunks through as they come; a failure or the total timeout mid-stream ends the
    stream with an SSE error event (tokens already sent cannot be taken back)."""
    first_at = time.perf_counter()
    events, usage_tokens, completed = first.count(b"data: {"), completion_tokens(first), False
    deadline = _Deadline(max(0.0, total_s - (first_at - started)))
    try:
        if first:
            yield first
        while True:
            if deadline.expired:
                raise timeout_error(name, "the end of the stream", total_s)
            deadline.waiting = True
            try:
                chunk = await anext(rest)
            except StopAsyncIteration:
                break
            except asyncio.CancelledError:
                if deadline.expired and deadline.task is not None and deadline.task.uncancel() == 0:
                    raise timeout_error(name, "the end of the stream", total_s) from None
                raise
            finally:
                deadline.waiting = False
            events += chunk.count(b"data: {")
            usage_tokens = completion_tokens(chunk) or usage_tokens
            yield chunk
        completed = True
    except BackendError as exc:
        logger.warning("backend %s failed mid-stream: %s", name, exc.message)
        on_failure(exc)
        yield b"data: " + orjson.dumps(exc.to_dict()) + b"\n\ndata: [DONE]\n\n"
    finally:
        deadline.cancel()
        routing.finished(name)
        await rest.aclose()  # type: ignore[attr-defined]
        if completed:
            tokens = usage_tokens if usage_tokens is not None else max(1, events - 1)
            ended = time.perf_counter()
            routing.record_stream(
                name, (first_at - started) * 1000, (ended - first_at) * 1000, tokens
            )
