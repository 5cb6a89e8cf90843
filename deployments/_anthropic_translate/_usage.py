"""Usage of a Messages answer in OpenAI's terms, cache reads and writes said apart."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Input:
    """A Messages answer's input tokens: uncached, read from and written to its prompt cache."""

    fresh: int = 0
    read: int = 0
    written: int = 0

    @classmethod
    def of(cls, usage: Any) -> Input:
        get = usage.get if isinstance(usage, dict) else lambda name: getattr(usage, name, 0)
        return cls(
            int(get("input_tokens") or 0),
            int(get("cache_read_input_tokens") or 0),
            int(get("cache_creation_input_tokens") or 0),
        )

    @property
    def total(self) -> int:
        # Cached prompt tokens are still prompt tokens to an OpenAI client.
        return self.fresh + self.read + self.written


def openai_usage(tokens: Input, output_tokens: int) -> dict[str, Any]:
    """OpenAI's usage object; cache reads as `prompt_tokens_details.cached_tokens`, cache
    writes as `cache_creation_input_tokens` (as LiteLLM reports them), for the ledger's price."""
    usage: dict[str, Any] = {
        "prompt_tokens": tokens.total,
        "completion_tokens": output_tokens,
        "total_tokens": tokens.total + output_tokens,
    }
    if tokens.read or tokens.written:
        usage["prompt_tokens_details"] = {"cached_tokens": tokens.read}
        usage["cache_creation_input_tokens"] = tokens.written
    return usage


def chat_usage(usage: dict[str, Any], before: dict[str, Any] | None = None) -> dict[str, Any]:
    """A Messages `usage` object (as JSON) in OpenAI's terms; `before` is what an earlier
    event of the same stream said (a `message_delta` may carry the output count only)."""
    before = before or {}
    output = usage.get("output_tokens")
    completion = int(output if output is not None else before.get("completion_tokens") or 0)
    if usage.get("input_tokens") is None:
        return {"prompt_tokens": 0, **before, "completion_tokens": completion,
                "total_tokens": int(before.get("prompt_tokens") or 0) + completion}  # fmt: skip
    return openai_usage(Input.of(usage), completion)
