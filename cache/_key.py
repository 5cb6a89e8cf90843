"""What identifies a request to the cache: a key over everything that changes its answer,
and, for semantic mode, the text of its last user turn apart from the rest (its context)."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson

# Body fields that do not change the answer: who asks, what to keep, hints to providers.
IGNORED = frozenset(
    {"user", "metadata", "store", "safety_identifier", "prompt_cache_key", "service_tier"}
)
DEFAULT_TEMPERATURE = 1.0  # OpenAI's and Anthropic's, when a request sets none


def _text_parts(content: Any) -> Any:
    """`"hi"` and `[{"type": "text", "text": "hi"}]` are the same message."""
    if isinstance(content, str):
        return content.strip()
    if isinstance(content, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and set(p) <= {"type", "text"}
        for p in content
    ):
        return "\n".join(str(p.get("text", "")).strip() for p in content)
    return content


def _message(message: Any) -> Any:
    if not isinstance(message, dict) or "content" not in message:
        return message
    return {**message, "content": _text_parts(message["content"])}


def normalised(body: dict[str, Any]) -> dict[str, Any]:
    """The body as the key sees it."""
    out = {k: v for k, v in body.items() if k not in IGNORED}
    if isinstance(out.get("messages"), list):
        out["messages"] = [_message(m) for m in out["messages"]]
    return out


def digest(parts: Iterable[Any]) -> str:
    hasher = hashlib.blake2b(digest_size=20)
    for part in parts:
        hasher.update(orjson.dumps(part, option=orjson.OPT_SORT_KEYS))
        hasher.update(b"\x00")
    return hasher.hexdigest()


def temperature(body: dict[str, Any]) -> float:
    value = body.get("temperature")
    return float(value) if isinstance(value, int | float) else DEFAULT_TEMPERATURE


@dataclass(frozen=True, slots=True)
class LastTurn:
    """A chat body's last user message, as text, and the rest of the body."""

    text: str
    context: dict[str, Any]


def last_turn(body: dict[str, Any]) -> LastTurn | None:
    """The last user turn of a chat (or a completion's prompt), when it is plain text."""
    messages = body.get("messages")
    if isinstance(messages, list) and messages:
        last = _message(messages[-1])
        if not isinstance(last, dict) or last.get("role") != "user":
            return None
        text = last.get("content")
        if not isinstance(text, str) or not text:
            return None
        rest = {**last, "content": None}
        return LastTurn(text, {**body, "messages": [*messages[:-1], rest]})
    prompt = body.get("prompt")
    if isinstance(prompt, str) and prompt.strip():
        return LastTurn(prompt.strip(), {**body, "prompt": None})
    return None


# Backend settings that do not change what it answers (prices, limits, placement, priors).
_OPERATIONAL = frozenset(
    {"description", "pricing", "quality", "latency_prior", "deployment", "timeouts", "retry",
     "circuit_breaker", "placement", "in_ingress", "api_key_env", "warmup", "tasks",
     "context_window", "stream_batching_interval_ms"}
)  # fmt: skip


def fingerprint(settings: dict[str, Any]) -> str:
    """What of a backend's config (as JSON) shapes its answers (model, weights, engine,
    adapter, upstream URL), as a digest: part of every key, so a changed backend misses."""
    return digest([{k: v for k, v in settings.items() if k not in _OPERATIONAL}])[:16]
