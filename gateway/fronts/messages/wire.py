"""Anthropic's Messages API passed through to a backend that speaks it: its event stream
read for the ledger, its usage in chat terms, the caller's output cap."""

from __future__ import annotations

from typing import Any

import orjson

from deployments import BackendError, Endpoint, chat_usage


class MessagesWire:
    """Anthropic's Messages event stream, passed through: usage from `message_start` (the
    prompt) and `message_delta` (the output so far), in OpenAI's terms for the ledger."""

    def __init__(self) -> None:
        self._usage: dict[str, object] = {}

    def usage(self, ready: bytes) -> tuple[dict[str, object] | None, bytes]:
        if b'"usage"' not in ready:
            return None, ready
        for event in ready.split(b"\n\n"):
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and b'"usage"' in line:
                    data = orjson.loads(line[5:])
                    found = (data.get("message") or data).get("usage") or {}
                    self._usage.update(chat_usage(found, self._usage))
        return dict(self._usage), ready

    @staticmethod
    def tokens(ready: bytes) -> int:
        return ready.count(b'"type":"content_block_delta"')

    @staticmethod
    def error(exc: BackendError) -> bytes:
        error = {"type": "api_error", "message": exc.message}
        return b"event: error\ndata: " + orjson.dumps({"type": "error", "error": error}) + b"\n\n"

    @staticmethod
    def ended(ready: bytes) -> bool:
        return b"event: message_stop" in ready


class MessagesPassThrough:
    """The Messages API as the pipeline calls backends that speak it
    (`gateway.core.PassThrough`)."""

    endpoint: Endpoint = "messages"

    def wire(self) -> MessagesWire:
        return MessagesWire()

    def usage_in_chat_terms(self, usage: dict[str, Any]) -> dict[str, Any]:
        return chat_usage(usage)

    def with_output_limit(self, body: dict[str, Any], limit: int) -> dict[str, Any]:
        return body  # a Messages body always carries max_tokens (the schema requires it)

    def with_context(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        system = body.get("system")
        if isinstance(system, list):  # content blocks: one more text block
            return {**body, "system": [*system, {"type": "text", "text": text}]}
        return {**body, "system": f"{system}\n\n{text}" if system else text}


MESSAGES = MessagesPassThrough()
