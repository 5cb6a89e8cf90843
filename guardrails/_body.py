"""Where text lives in the bodies of the four client APIs, for masking requests and
restoring answers.

A request's text is under its top-level text fields (chat `messages`, completions `prompt`,
Messages `system`/`messages`, Responses `instructions`/`input`): every string below them is
text, but for the fields that say what a thing is (`type`, ids, `role`, a tool's `name`,
media). Tool-call arguments are JSON in a string: masked as text (a placeholder needs no
escaping) and restored escaped."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

TEXT_FIELDS = ("system", "instructions", "messages", "prompt", "input")  # in reading order
STRUCTURAL = frozenset(
    {
        "type",
        "id",
        "role",
        "name",
        "call_id",
        "tool_call_id",
        "tool_use_id",
        "status",
        "cache_control",
        "image_url",
        "source",
        "url",
        "detail",
        "media_type",
        "format",
        "signature",
        "data",
        "file_id",
        "file_data",
        "input_audio",
        "audio",
        "model",
    }
)
ESCAPED = frozenset({"arguments", "partial_json"})  # JSON text inside a string

Transform = Callable[[str, bool], str]  # (text, escaped) -> text


def texts(body: dict[str, Any]) -> list[str]:
    """Every text of a request body (what detectors and rules read), in order."""
    found: list[str] = []

    def keep(text: str, escaped: bool) -> str:
        found.append(text)
        return text

    map_request(body, keep)
    return found


def map_request(body: dict[str, Any], transform: Transform) -> dict[str, Any]:
    """A copy of `body` with `transform` applied to each of its texts (the rest shared)."""
    out = dict(body)
    for key in TEXT_FIELDS:
        if key in body:
            out[key] = _walk(body[key], transform, False)
    return out


def map_all(value: Any, transform: Transform) -> Any:
    """`value` (an answer, or one event of a stream) with `transform` applied to every
    string in it but the structural ones."""
    return _walk(value, transform, False)


def _walk(value: Any, transform: Transform, escaped: bool) -> Any:
    if isinstance(value, str):
        return transform(value, escaped)
    if isinstance(value, list):
        return [_walk(item, transform, escaped) for item in value]
    if isinstance(value, dict):
        return {
            key: item if key in STRUCTURAL else _walk(item, transform, key in ESCAPED)
            for key, item in value.items()
        }
    return value
