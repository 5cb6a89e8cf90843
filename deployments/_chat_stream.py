"""The base of translators from a chat completion's SSE stream to another API's events."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import orjson


class ChatStreamTranslator(ABC):
    """Feed it chat SSE bytes as they come (`feed`; an event may span feeds), then `close`;
    each returns the other API's events due so far. Subclasses say how the stream starts
    (`_start`, given its first chunk), what a choice's delta becomes (`_delta`), how it ends
    (`_finish`: on `[DONE]`, or at `close` without one) and how it breaks (`_broken`: the
    gateway's mid-stream `{"error": ...}` event)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._ended = False
        self._usage: dict[str, Any] | None = None  # the upstream's, from its usage chunk

    def feed(self, data: bytes) -> bytes:
        self._buffer += data
        out = []
        while (end := self._buffer.find(b"\n\n")) >= 0:
            raw, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            for line in raw.split(b"\n"):
                if line.startswith(b"data:") and not self._ended:
                    out.append(self._payload(line[5:].strip()))
        return b"".join(out)

    def close(self) -> bytes:
        return b"" if self._ended else self._end()

    def _payload(self, payload: bytes) -> bytes:
        return self._end() if payload == b"[DONE]" else self._chunk(orjson.loads(payload))

    def _end(self) -> bytes:
        self._ended = True
        return self._finish()

    def _chunk(self, chunk: dict[str, Any]) -> bytes:
        out = self._start(chunk)
        if "error" in chunk:
            self._ended = True
            error = chunk["error"] or {}
            return out + self._broken(str(error.get("message", "stream broken")))
        if chunk.get("usage"):
            self._usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            out += self._delta(choice)
        return out

    @abstractmethod
    def _start(self, chunk: dict[str, Any]) -> bytes:
        """The opening events, once (later calls return nothing)."""

    @abstractmethod
    def _delta(self, choice: dict[str, Any]) -> bytes:
        """The events for one choice of a chunk."""

    @abstractmethod
    def _broken(self, message: str) -> bytes:
        """The event of a stream the backend broke off."""

    @abstractmethod
    def _finish(self) -> bytes:
        """The closing events."""
