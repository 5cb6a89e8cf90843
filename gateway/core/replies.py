"""What the pipeline answers: a whole `Reply`, or a `StreamReply` of SSE bytes that whoever
sends it must close."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field

import orjson

from gateway.errors import OpenAIError

logger = logging.getLogger("ray.serve")


@dataclass(slots=True)
class Reply:
    """A whole answer: status, JSON body, headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    native: bool = False  # the body is in the client's own API: a backend spoke it natively
    failure: OpenAIError | None = None  # the error an error reply says, for other fronts

    @classmethod
    def error(cls, error: OpenAIError, headers: Mapping[str, str] | None = None) -> Reply:
        merged = {**error.headers, **(headers or {})}
        return cls(error.status, orjson.dumps(error.body()), merged, failure=error)


class StreamReply:
    """A streamed answer (SSE bytes). Whoever sends it must `aclose` it, sent or not: that
    ends the backend call and finishes the request's record, exactly once."""

    status = 200

    def __init__(
        self,
        headers: dict[str, str],
        first: bytes,
        rest: AsyncIterator[bytes],
        finish: Callable[[], None],
        native: bool = False,
    ) -> None:
        self.headers = headers
        self.native = native  # events in the client's own API: a backend spoke it natively
        self._first: bytes | None = first
        self._rest = rest
        self._finish = finish
        self._closed = False

    def __aiter__(self) -> StreamReply:
        return self

    async def __anext__(self) -> bytes:
        if self._first is not None:
            first, self._first = self._first, None
            if first:
                return first
        return await anext(self._rest)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            await self._rest.aclose()  # type: ignore[attr-defined]
        finally:
            self._finish()


class TranslatedStream(StreamReply):
    """A stream made from another (`events` iterates `chat`): another API's events, or the
    same passed on with work on the side. Closing it closes the inner stream, iterated or
    not: that ends the backend call and the record."""

    def __init__(self, chat: StreamReply, events: AsyncIterator[bytes]) -> None:
        super().__init__(chat.headers, b"", events, lambda: None)
        self._chat = chat

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._chat.aclose()


async def replay(chunks: list[bytes]) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk


class RecordedStream(StreamReply):
    """A live stream passed on as it is, its events kept: handed to `done` when the stream
    ended of itself (not when the client left or it broke, nor when its events came to more
    than `limit` bytes, which are then no longer kept: `done` never runs)."""

    def __init__(
        self, inner: StreamReply, done: Callable[[tuple[bytes, ...]], None], limit: int
    ) -> None:
        super().__init__(inner.headers, b"", self._events(), lambda: None, inner.native)
        self._inner = inner
        self._done = done
        self._chunks: list[bytes] = []
        self._left = limit
        self._complete = False

    async def _events(self) -> AsyncIterator[bytes]:
        async for chunk in self._inner:
            self._left -= len(chunk)
            if self._left >= 0:
                self._chunks.append(chunk)
            yield chunk
        self._complete = self._left >= 0

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            await self._inner.aclose()  # finishes the record: its usage and status are known
            if self._complete:
                try:
                    self._done(tuple(self._chunks))
                except Exception:
                    logger.exception("keeping a stream's events failed")
