"""Relaying a backend's SSE stream to the client: pass-through, the first-token and total
deadlines, the stream's usage for the ledger, and one attempt around all of it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson

from deployments import BackendError
from gateway.core.attempts import Attempt
from gateway.core.front import Wire
from gateway.core.resilience import Limits, timeout_error
from llmops import RequestRecord

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


class StreamBroken(Exception):
    """A resumable stream's backend failed after its first bytes reached the client: the
    caller may continue the answer elsewhere (`gateway.core.streaming`)."""

    def __init__(self, backend: str, error: BackendError) -> None:
        super().__init__(error.message)
        self.backend = backend
        self.error = error


class ChatWire:
    """An OpenAI SSE stream: its usage chunk, one event per token, OpenAI's error shape."""

    def __init__(self, strip_usage: bool) -> None:
        self.strip_usage = strip_usage

    def usage(self, ready: bytes) -> tuple[dict[str, object] | None, bytes]:
        if _USAGE not in ready:
            return None, ready
        return take_usage(ready, self.strip_usage)

    @staticmethod
    def tokens(ready: bytes) -> int:
        return ready.count(b"data: {")

    @staticmethod
    def error(exc: BackendError) -> bytes:
        return b"data: " + orjson.dumps(exc.to_dict()) + b"\n\ndata: [DONE]\n\n"

    @staticmethod
    def ended(ready: bytes) -> bool:
        return b"data: [DONE]" in ready


class _Deadline:
    """Cancels the relaying task if the deadline passes while it waits on the upstream.

    One timer per stream instead of a timeout per chunk: chunks cost nothing extra. The task
    is the one waiting at the time (the stream is primed by one task and relayed by another).
    """

    def __init__(self, seconds: float) -> None:
        self.task: asyncio.Task[object] | None = None
        self.expired = False
        self._timer = asyncio.get_running_loop().call_later(seconds, self._expire)

    def _expire(self) -> None:
        self.expired = True
        if self.task is not None:
            self.task.cancel()

    def cancel(self) -> None:
        self._timer.cancel()

    async def next(self, chunks: AsyncIterator[bytes], name: str, total_s: float) -> bytes | None:
        """The upstream's next chunk, None at its end; a timeout error once the deadline
        passed (waiting, or before)."""
        if self.expired:
            raise timeout_error(name, "the end of the stream", total_s)
        self.task = asyncio.current_task()
        try:
            return await anext(chunks)
        except StopAsyncIteration:
            return None
        except asyncio.CancelledError:
            task = self.task
            if self.expired and task is not None and task.uncancel() == 0:
                raise timeout_error(name, "the end of the stream", total_s) from None
            raise
        finally:
            self.task = None


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


async def relay(
    attempt: Attempt,
    chunks: AsyncIterator[bytes],
    limits: Limits,
    record: RequestRecord,
    wire: Wire,
    resumable: bool = False,
) -> AsyncIterator[bytes]:
    """One streamed attempt. The first item comes only once the upstream's first chunk did
    (a failure before it raises, so the caller may still fall back or answer with a status);
    a failure after it ends the stream with an SSE error event (sent tokens cannot be taken
    back), or, `resumable`, raises `StreamBroken` once settled. Primed with `anext`, closed
    with `aclose` by the caller."""
    name = attempt.outcome.backend
    frame = _Framer()
    events, usage, completed, deadline = 0, None, False, None
    broken: BackendError | None = None
    ended = False  # the last event was relayed: an OpenAI SDK hangs up after `[DONE]`

    def account(chunk: bytes) -> bytes:
        nonlocal events, usage, ended
        ready = frame(chunk)
        found, ready = wire.usage(ready)
        usage = found or usage
        events += wire.tokens(ready)
        ended = ended or wire.ended(ready)
        return ready

    async with attempt:
        try:
            try:
                async with asyncio.timeout(limits.first_token_s):
                    first = await anext(chunks)
            except StopAsyncIteration:
                first = b""
            except TimeoutError:
                raise timeout_error(name, "the first token", limits.first_token_s) from None
            deadline = _first_byte(attempt, limits, record)
            yield account(first)
            try:
                while (chunk := await deadline.next(chunks, name, limits.total_s)) is not None:
                    if ready := account(chunk):
                        yield ready
                if frame.tail:
                    yield frame.tail
                completed = True
            except BackendError as exc:
                logger.warning("backend %s failed mid-stream: %s", name, exc.message)
                attempt.fail(exc)
                broken = exc
                if not resumable:
                    record.fail(exc.status, exc.code or "stream_broken")
                    yield wire.error(exc)
        finally:
            if deadline is not None:
                deadline.cancel()
            await chunks.aclose()  # type: ignore[attr-defined]
            _settle(attempt, record, usage, events, completed or ended or broken is not None)
    if broken is not None and resumable:
        raise StreamBroken(name, broken)


def _first_byte(attempt: Attempt, limits: Limits, record: RequestRecord) -> _Deadline:
    """The first chunk came: the time to it, and the deadline of the rest."""
    attempt.first_byte()
    started = attempt.outcome.started
    first_at = attempt.outcome.first_byte or started
    record.ttft_ms = (first_at - started) * 1000
    return _Deadline(max(0.0, limits.total_s - (first_at - started)))


def _settle(
    attempt: Attempt,
    record: RequestRecord,
    usage: dict[str, object] | None,
    events: int,
    completed: bool,
) -> None:
    """What a streamed attempt produced, for its outcome and the request's record."""
    tokens = usage.get("completion_tokens") if usage else None
    if not isinstance(tokens, int):
        tokens = max(1, events - 1)  # no usage from upstream: one event per token
    attempt.outcome.tokens = tokens
    if attempt.outcome.first_byte is not None:
        if not completed and record.status == 200:
            record.fail(499, "client_disconnected")
        record.take_usage(usage)
        if record.usage_source == "none":
            record.completion_tokens = tokens
