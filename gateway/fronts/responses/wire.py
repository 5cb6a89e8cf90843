"""OpenAI's Responses API passed through to a backend that speaks it: its event stream read
for the ledger, its usage in chat terms, the caller's output cap."""

from __future__ import annotations

from typing import Any

import orjson

from deployments import BackendError, Endpoint

# The events a Responses stream ends with.
_FINAL = (b"event: response.completed", b"event: response.incomplete", b"event: response.failed")


class ResponsesWire:
    """OpenAI's Responses event stream, passed through: usage from the final response
    (`response.completed` or `.incomplete`), in chat terms for the ledger."""

    def usage(self, ready: bytes) -> tuple[dict[str, object] | None, bytes]:
        if b'"usage"' not in ready:
            return None, ready
        found: dict[str, object] | None = None
        for event in ready.split(b"\n\n"):
            for line in event.split(b"\n"):
                if line.startswith(b"data:") and b'"usage"' in line:
                    usage = (orjson.loads(line[5:]).get("response") or {}).get("usage")
                    found = dict(responses_usage_in_chat_terms(usage)) if usage else found
        return found, ready

    @staticmethod
    def tokens(ready: bytes) -> int:
        return ready.count(b'"type":"response.output_text.delta"')

    @staticmethod
    def error(exc: BackendError) -> bytes:
        error = {
            "type": "error",
            "code": exc.code or "stream_broken",
            "message": exc.message,
            "param": None,
            "sequence_number": 0,
        }
        return b"event: error\ndata: " + orjson.dumps(error) + b"\n\n"

    @staticmethod
    def ended(ready: bytes) -> bool:
        return any(kind in ready for kind in _FINAL)


def responses_usage_in_chat_terms(usage: dict[str, Any]) -> dict[str, Any]:
    """A Responses `usage` (cached input tokens are part of `input_tokens`) as chat's."""
    prompt, output = int(usage.get("input_tokens") or 0), int(usage.get("output_tokens") or 0)
    chat: dict[str, Any] = {
        "prompt_tokens": prompt, "completion_tokens": output, "total_tokens": prompt + output
    }  # fmt: skip
    cached = (usage.get("input_tokens_details") or {}).get("cached_tokens")
    if isinstance(cached, int) and cached:
        chat["prompt_tokens_details"] = {"cached_tokens": cached}
    return chat


class ResponsesPassThrough:
    """The Responses API as the pipeline calls backends that speak it
    (`gateway.core.PassThrough`)."""

    endpoint: Endpoint = "responses"

    def wire(self) -> ResponsesWire:
        return ResponsesWire()

    def usage_in_chat_terms(self, usage: dict[str, Any]) -> dict[str, Any]:
        return responses_usage_in_chat_terms(usage)

    def with_output_limit(self, body: dict[str, Any], limit: int) -> dict[str, Any]:
        if "max_output_tokens" in body:
            return body
        return {**body, "max_output_tokens": limit}

    def with_context(self, body: dict[str, Any], text: str) -> dict[str, Any]:
        instructions = body.get("instructions")
        return {**body, "instructions": f"{instructions}\n\n{text}" if instructions else text}


RESPONSES = ResponsesPassThrough()
