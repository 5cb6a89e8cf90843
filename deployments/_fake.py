"""A scripted backend for unit tests and demos, implementing the same interface as the real ones."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

from deployments import _openai_shapes as shapes
from deployments._base import Backend, BackendError, Endpoint, Recovery, max_output_tokens
from deployments._config import FakeBackendConfig


def _prompt_text(endpoint: Endpoint, body: dict[str, Any]) -> str:
    if endpoint == "completions":
        prompt = body.get("prompt", "")
        return prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
    for message in reversed(body.get("messages") or []):
        if message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            return " ".join(
                part.get("text", "") for part in content or [] if isinstance(part, dict)
            )
    return ""


def _prefilled(endpoint: Endpoint, body: dict[str, Any], words: list[str]) -> int:
    """How many words of the answer the request already holds, where it asks to continue
    it: a final assistant turn with vLLM's `continue_final_message`, or a prompt ending with
    them (a completion carries on its prompt). The answer then goes on after them."""
    if endpoint == "completions":
        prompt = body.get("prompt")
        if not isinstance(prompt, str):
            return 0
        return next((k for k in range(len(words), 0, -1)
                     if prompt.endswith(" ".join(words[:k]))), 0)  # fmt: skip
    messages = body.get("messages") or []
    if not (body.get("continue_final_message") and messages):
        return 0
    last = messages[-1]
    if last.get("role") != "assistant" or not isinstance(last.get("content"), str):
        return 0
    given = last["content"].split()
    return len(given) if words[: len(given)] == given else 0


class FakeBackend(Backend):
    """Answers with `reply` (or echoes the prompt), word by word, with configurable delays.

    Token counts are whitespace words, so tests can predict usage exactly.
    """

    def __init__(self, config: FakeBackendConfig) -> None:
        self.config = config
        self.calls: list[tuple[Endpoint, dict[str, Any]]] = []

    def _answer(self, endpoint: Endpoint, body: dict[str, Any]) -> tuple[list[str], int, str, bool]:
        self.calls.append((endpoint, body))
        status, times = self.config.fail_status, self.config.fail_times
        if status is not None and (times is None or len(self.calls) <= times):
            raise BackendError(
                f"fake backend configured to fail with {status}",
                status=status,
                recovery=Recovery.RETRY if status == 429 or status >= 500 else Recovery.NONE,
            )
        prompt = _prompt_text(endpoint, body)
        reply = self.config.reply
        drift = self.config.drift_after_calls
        if drift is not None and len(self.calls) > drift:
            reply = self.config.drift_reply
        words = (reply or prompt).split()
        given = _prefilled(endpoint, body, words) if reply else 0
        words = words[given:]
        limit = max_output_tokens(body)
        finish = "stop"
        if limit is not None and len(words) > limit:
            words, finish = words[:limit], "length"
        return words, len(prompt.split()), finish, given > 0

    async def complete(self, endpoint: Endpoint, body: dict[str, Any]) -> dict[str, Any]:
        if endpoint == "embeddings":
            return await self._embed(body)
        words, prompt_tokens, finish, _ = self._answer(endpoint, body)
        await asyncio.sleep(
            (self.config.latency_ms + self.config.token_interval_ms * len(words)) / 1000
        )
        return shapes.completion_object(
            endpoint,
            self.config.model,
            " ".join(words),
            finish,
            shapes.usage(prompt_tokens, len(words)),
        )

    async def stream(self, endpoint: Endpoint, body: dict[str, Any]) -> AsyncIterator[bytes]:
        words, prompt_tokens, finish, continuing = self._answer(endpoint, body)
        chunk_id = shapes.new_id(endpoint)
        model = self.config.model
        await asyncio.sleep(self.config.latency_ms / 1000)
        if endpoint == "chat/completions":
            yield shapes.sse(shapes.chunk_object(endpoint, chunk_id, model, "", role=True))
        for index, word in enumerate(words):
            if index:
                await asyncio.sleep(self.config.token_interval_ms / 1000)
            if index == self.config.fail_after_tokens:
                raise BackendError("fake backend broke off", code="upstream_stream_broken")
            # Carrying on a prefilled answer: its next word comes after a space.
            text = word if index == 0 and not continuing else " " + word
            yield shapes.sse(shapes.chunk_object(endpoint, chunk_id, model, text))
        yield shapes.sse(shapes.chunk_object(endpoint, chunk_id, model, None, finish))
        options = body.get("stream_options") or {}
        if options.get("include_usage"):
            token_usage = shapes.usage(prompt_tokens, len(words))
            yield shapes.sse(shapes.usage_chunk(endpoint, chunk_id, model, token_usage))
        yield shapes.DONE

    async def _embed(self, body: dict[str, Any]) -> dict[str, Any]:
        """Vectors from each word's hash (texts sharing words point alike): 16 dimensions."""
        self.calls.append(("embeddings", body))
        await asyncio.sleep(self.config.latency_ms / 1000)
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data, tokens = [], 0
        for index, text in enumerate(texts):
            words = str(text).lower().split()
            tokens += len(words)
            vector = [0.0] * 16
            for word in words:
                digest = hashlib.sha256(word.encode()).digest()
                for i in range(16):
                    vector[i] += digest[i] / 255 - 0.5
            norm = math.sqrt(sum(v * v for v in vector)) or 1.0
            embedding: Any = [v / norm for v in vector]
            if body.get("encoding_format") == "base64":  # OpenAI's: little-endian float32
                embedding = base64.b64encode(struct.pack(f"<{len(embedding)}f", *embedding))
                embedding = embedding.decode()
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        usage = {"prompt_tokens": tokens, "total_tokens": tokens}
        return {"object": "list", "data": data, "model": self.config.model, "usage": usage}
