"""A streamed chat completion (OpenAI SSE bytes) as the Messages API's event stream:
`message_start`, `ping`, `content_block_start/delta/stop` (`text_delta`, `input_json_delta`),
`message_delta` (stop reason, usage), `message_stop`; an `error` event for a stream that
broke."""

from __future__ import annotations

from typing import Any

import orjson

from deployments import ChatStreamTranslator
from gateway.fronts.messages.translate import message_id, message_usage, stop_reason


def event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind, **data}) + b"\n\n"


class MessagesStream(ChatStreamTranslator):
    """A chat stream as Messages events (`feed`, then `close`)."""

    def __init__(self, model: str, stops: list[str], input_tokens: int = 0) -> None:
        super().__init__()
        self.model = model
        self.stops = stops
        self.input_tokens = input_tokens  # an estimate until the upstream's usage arrives
        self._started = False
        self._block: int | None = None  # the open content block's index
        self._blocks = 0
        self._tools: dict[int, int] = {}  # tool_calls index -> content block index
        self._stop: tuple[str, str | None] = ("end_turn", None)

    def _broken(self, message: str) -> bytes:
        return event("error", {"error": {"type": "api_error", "message": message}})

    def _start(self, chunk: dict[str, Any]) -> bytes:
        if self._started:
            return b""
        self._started = True
        message: dict[str, Any] = {
            "id": message_id(chunk.get("id")),
            "type": "message",
            "role": "assistant",
            "model": chunk.get("model") or self.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": self.input_tokens, "output_tokens": 0},
        }
        return event("message_start", {"message": message}) + event("ping", {})

    def _open(self, block: dict[str, Any]) -> bytes:
        out = self._close_block()
        self._block, self._blocks = self._blocks, self._blocks + 1
        return out + event("content_block_start", {"index": self._block, "content_block": block})

    def _close_block(self) -> bytes:
        if self._block is None:
            return b""
        index, self._block = self._block, None
        return event("content_block_stop", {"index": index})

    def _delta(self, choice: dict[str, Any]) -> bytes:
        delta, out = choice.get("delta") or {}, b""
        text = delta.get("content")
        if text:
            if self._block is None or self._block in self._tools.values():
                out += self._open({"type": "text", "text": ""})
            out += event(
                "content_block_delta",
                {"index": self._block, "delta": {"type": "text_delta", "text": text}},
            )
        for call in delta.get("tool_calls") or []:
            position = call.get("index", 0)
            function = call.get("function") or {}
            if position not in self._tools:
                block = {
                    "type": "tool_use",
                    "id": call.get("id"),
                    "name": function.get("name"),
                    "input": {},
                }
                out += self._open(block)
                self._tools[position] = self._block  # type: ignore[assignment]
            arguments = function.get("arguments")
            if arguments:
                index = self._tools[position]
                partial = {"type": "input_json_delta", "partial_json": arguments}
                out += event("content_block_delta", {"index": index, "delta": partial})
        if choice.get("finish_reason"):
            self._stop = stop_reason(choice, self.stops)
        return out

    def _finish(self) -> bytes:
        out = self._start({}) + self._close_block()
        usage = message_usage(self._usage)
        if self._usage is None:
            usage["input_tokens"] = self.input_tokens
        reason, sequence = self._stop
        delta = {"stop_reason": reason, "stop_sequence": sequence}
        out += event("message_delta", {"delta": delta, "usage": usage})
        return out + event("message_stop", {})
