"""Small builders for OpenAI response objects, shared by backends that synthesise them."""

from __future__ import annotations

import time
import uuid
from typing import Any

import orjson

from deployments._base import Endpoint

DONE = b"data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def new_id(endpoint: Endpoint) -> str:
    prefix = "chatcmpl" if endpoint == "chat/completions" else "cmpl"
    return f"{prefix}-{uuid.uuid4().hex}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion_object(
    endpoint: Endpoint, model: str, text: str, finish_reason: str, token_usage: dict[str, int]
) -> dict[str, Any]:
    if endpoint == "chat/completions":
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        kind = "chat.completion"
    else:
        choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {
        "id": new_id(endpoint),
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
        "usage": token_usage,
    }


def chunk_object(
    endpoint: Endpoint,
    chunk_id: str,
    model: str,
    text: str | None,
    finish_reason: str | None = None,
    role: bool = False,
) -> dict[str, Any]:
    if endpoint == "chat/completions":
        delta: dict[str, Any] = {"role": "assistant"} if role else {}
        if text is not None:
            delta["content"] = text
        choice: dict[str, Any] = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        kind = "chat.completion.chunk"
    else:
        choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        kind = "text_completion"
    return {
        "id": chunk_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [choice],
    }


def usage_chunk(
    endpoint: Endpoint, chunk_id: str, model: str, token_usage: dict[str, int]
) -> dict[str, Any]:
    kind = "chat.completion.chunk" if endpoint == "chat/completions" else "text_completion"
    return {
        "id": chunk_id,
        "object": kind,
        "created": int(time.time()),
        "model": model,
        "choices": [],
        "usage": token_usage,
    }
