"""Restoring placeholders in a streamed answer (SSE), in any of the four client APIs.

A placeholder may arrive split across events (`<EMAIL` in one delta, `_ADDRESS_1>` in the
next), and events across reads. Each incremental text (a channel: a choice's content, one
tool call's arguments, a Messages content block, a Responses part) holds back a tail that
may be the start of a placeholder, and lets it go with the next delta of that channel, when
the channel ends (a finish reason, `content_block_stop`, a `.done` event) or when the stream
does; what is let go on its own goes out as a copy of the channel's last delta event."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson

from guardrails._body import map_all
from guardrails._vault import Vault

Channel = tuple[Any, ...]


@dataclass(slots=True)
class _Held:
    text: str
    escaped: bool
    template: dict[str, Any]  # the channel's last delta event
    path: tuple[str | int, ...]  # where its text is in that event
    event_name: bytes | None


class StreamRestorer:
    """Feed it SSE bytes as they come; it returns the bytes to send."""

    def __init__(self, vault: Vault) -> None:
        self.vault = vault
        self._tail = b""
        self._held: dict[Channel, _Held] = {}

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        cut = data.rfind(b"\n\n")
        if cut < 0:
            self._tail = data
            return b""
        self._tail = data[cut + 2 :]
        return b"".join(self._event(raw) for raw in data[: cut + 2].split(b"\n\n") if raw)

    def close(self) -> bytes:
        """What is still held: sent as the stream ends."""
        out = b"".join(self._release(list(self._held)))
        if self._tail:
            out += self._event(self._tail)
            self._tail = b""
        return out

    def _event(self, raw: bytes) -> bytes:
        lines = raw.split(b"\n")
        name = next((line for line in lines if line.startswith(b"event:")), None)
        data_at = next((i for i, line in enumerate(lines) if line.startswith(b"data:")), None)
        if data_at is None:
            return raw + b"\n\n"
        payload = lines[data_at][5:].strip()
        if payload == b"[DONE]":
            return b"".join(self._release(list(self._held))) + raw + b"\n\n"
        try:
            event = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return raw + b"\n\n"
        if not isinstance(event, dict):
            return raw + b"\n\n"
        before = b"".join(self._release(self._ending(event)))
        event = self._restore(event, name)
        lines[data_at] = b"data: " + orjson.dumps(event)
        return before + b"\n".join(lines) + b"\n\n"

    def _restore(self, event: dict[str, Any], name: bytes | None) -> dict[str, Any]:
        deltas = list(_deltas(event))
        if not deltas:
            restored: dict[str, Any] = map_all(event, self._whole)
            return restored
        for channel, path, escaped in deltas:
            text = _get(event, path)
            held = self._held.pop(channel, None)
            if held is not None:
                text = held.text + text
            safe, tail = self.vault.split_safe(text)
            _set(event, path, self.vault.restore(safe, escaped))
            if tail:
                self._held[channel] = _Held(tail, escaped, copy.deepcopy(event), path, name)
        return event

    def _whole(self, text: str, escaped: bool) -> str:
        return self.vault.restore(text, escaped)

    def _ending(self, event: dict[str, Any]) -> list[Channel]:
        """The held channels `event` ends (their remainder goes out before it)."""
        ended = _ended(event)
        return [
            c for c in self._held if ended is not None and (ended == () or c[: len(ended)] == ended)
        ]

    def _release(self, channels: list[Channel]) -> Iterator[bytes]:
        for channel in channels:
            held = self._held.pop(channel)
            event = held.template
            _set(event, held.path, self.vault.restore(held.text, held.escaped))
            _blank_others(event, held.path)
            head = held.event_name + b"\n" if held.event_name else b""
            yield head + b"data: " + orjson.dumps(event) + b"\n\n"


def _deltas(event: dict[str, Any]) -> Iterator[tuple[Channel, tuple[str | int, ...], bool]]:
    """The incremental texts in one event: (channel, path, escaped)."""
    kind = event.get("type")
    if isinstance(kind, str):  # Messages and Responses events
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            for field in ("text", "partial_json", "thinking"):
                if isinstance(delta.get(field), str):
                    channel: Channel = ("block", event.get("index"))
                    yield channel, ("delta", field), field == "partial_json"
        elif kind.endswith(".delta") and isinstance(event.get("delta"), str):
            part: Channel = ("part", event.get("output_index"), event.get("content_index"))
            yield part, ("delta",), "arguments" in kind
        return
    for i, choice in enumerate(event.get("choices") or []):
        index = choice.get("index", i)
        if isinstance(choice.get("text"), str):  # completions
            yield ("choice", index, "text"), ("choices", i, "text"), False
        delta = choice.get("delta") or {}
        for field in ("content", "reasoning_content", "reasoning"):
            if isinstance(delta.get(field), str):
                yield ("choice", index, field), ("choices", i, "delta", field), False
        for j, call in enumerate(delta.get("tool_calls") or []):
            arguments = (call.get("function") or {}).get("arguments")
            if isinstance(arguments, str):
                tool: Channel = ("choice", index, "tool", call.get("index", j))
                path = ("choices", i, "delta", "tool_calls", j, "function", "arguments")
                yield tool, path, True


def _ended(event: dict[str, Any]) -> Channel | None:
    """The channel prefix an event closes; () for all of them; None for none."""
    kind = event.get("type")
    if kind == "content_block_stop":
        return ("block", event.get("index"))
    if isinstance(kind, str) and kind.startswith("response.") and kind.endswith(".done"):
        if "output_index" in event and "content_index" in event:
            return ("part", event.get("output_index"), event.get("content_index"))
        if "output_index" in event:
            return ("part", event.get("output_index"))
        return ()
    if kind in ("message_delta", "message_stop", "response.completed", "error"):
        return ()
    for choice in event.get("choices") or []:
        if choice.get("finish_reason"):
            return ("choice", choice.get("index", 0))
    return None


def _get(event: Any, path: tuple[str | int, ...]) -> Any:
    for step in path:
        event = event[step]
    return event


def _set(event: Any, path: tuple[str | int, ...], value: str) -> None:
    for step in path[:-1]:
        event = event[step]
    event[path[-1]] = value


def _blank_others(event: dict[str, Any], path: tuple[str | int, ...]) -> None:
    """A copied chat chunk carries only the released text: other choices, finish reasons,
    usage and a tool call's id and name came with the events that had them."""
    if path[0] != "choices":
        return
    choice = event["choices"][path[1]]
    event["choices"] = [choice]
    event.pop("usage", None)
    choice["finish_reason"] = None
    if len(path) < 4:  # a completion's text
        return
    delta = choice["delta"]
    if path[3] == "tool_calls":
        call = delta["tool_calls"][path[4]]
        arguments = call["function"]["arguments"]
        choice["delta"] = {
            "tool_calls": [
                {"index": call.get("index", path[4]), "function": {"arguments": arguments}}
            ]
        }
    else:
        choice["delta"] = {path[3]: delta[path[3]]}
