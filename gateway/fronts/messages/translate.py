"""Anthropic Messages in front of any backend: a Messages request as an OpenAI chat
completion body, and a chat completion (whole or streamed) back as a Messages reply.

The mirror of `_backend`, which puts the Messages API behind the chat interface; both share
its tables. Pure functions over plain dicts; no I/O.
"""

from __future__ import annotations

from typing import Any

import orjson

from deployments import FINISH_REASONS, client_error

# OpenAI finish reasons -> Anthropic stop reasons (the first Anthropic name of each).
STOP_REASONS = {finish: stop for stop, finish in reversed(FINISH_REASONS.items())}
# Messages fields with no chat counterpart that a backend could still do without.
_DROPPED = ("thinking", "service_tier", "container", "context_management", "cache_control")


def _text(content: Any, param: str) -> str:
    """A string, or text blocks joined (a system prompt, a tool result's content)."""
    if content is None or isinstance(content, str):
        return content or ""
    texts = []
    for index, block in enumerate(content):
        if not isinstance(block, dict) or block.get("type") != "text":
            kind = block.get("type") if isinstance(block, dict) else type(block).__name__
            raise client_error(
                f"{param}.{index}: only text blocks are supported here, not {kind!r}",
                param=f"{param}.{index}",
            )
        texts.append(str(block.get("text", "")))
    return "\n".join(texts)


def _image_part(block: dict[str, Any], param: str) -> dict[str, Any]:
    source = block.get("source") or {}
    if source.get("type") == "base64":
        url = f"data:{source.get('media_type')};base64,{source.get('data')}"
    elif source.get("type") == "url":
        url = str(source.get("url"))
    else:
        raise client_error(
            f"{param}.source: a base64 or url image source is required", param=f"{param}.source"
        )
    return {"type": "image_url", "image_url": {"url": url}}


def _tool_result(block: dict[str, Any], param: str) -> dict[str, Any]:
    content = block.get("content")
    if isinstance(content, list):  # text and image blocks: the text is what chat can carry
        content = [b for b in content if isinstance(b, dict) and b.get("type") == "text"]
    text = _text(content, f"{param}.content")
    if block.get("is_error"):
        text = f"Error: {text}"
    return {"role": "tool", "tool_call_id": block.get("tool_use_id"), "content": text}


def _user_turn(content: Any, param: str) -> list[dict[str, Any]]:
    """One Messages user turn: its tool results as `tool` messages first (chat wants them
    right after the assistant's calls), then the rest as one user message."""
    if isinstance(content, str):
        return [{"role": "user", "content": content}]
    results, parts = [], []
    for index, block in enumerate(content):
        where, kind = f"{param}.{index}", block.get("type")
        if kind == "text":
            parts.append({"type": "text", "text": str(block.get("text", ""))})
        elif kind == "image":
            parts.append(_image_part(block, where))
        elif kind == "tool_result":
            results.append(_tool_result(block, where))
        else:
            raise client_error(
                f"{where}: content block type {kind!r} is not supported by this model's backend",
                param=where,
            )
    return results + ([{"role": "user", "content": parts}] if parts else [])


def _assistant_turn(content: Any, param: str) -> dict[str, Any]:
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    texts, calls = [], []
    for index, block in enumerate(content):
        kind = block.get("type")
        if kind == "text":
            texts.append(str(block.get("text", "")))
        elif kind == "tool_use":
            arguments = orjson.dumps(block.get("input") or {}).decode()
            calls.append(
                {
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": arguments},
                }
            )
        elif kind not in ("thinking", "redacted_thinking"):  # a backend's own reasoning
            where = f"{param}.{index}"
            raise client_error(
                f"{where}: content block type {kind!r} is not supported by this model's backend",
                param=where,
            )
    message: dict[str, Any] = {"role": "assistant", "content": "".join(texts) or None}
    if calls:
        message["tool_calls"] = calls
    return message


def _chat_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = []
    system = _text(body.get("system"), "system")
    if system:
        messages.append({"role": "system", "content": system})
    for index, turn in enumerate(body["messages"]):
        param = f"messages.{index}.content"
        if turn["role"] == "user":
            messages.extend(_user_turn(turn["content"], param))
        else:
            messages.append(_assistant_turn(turn["content"], param))
    return messages


def _chat_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for index, tool in enumerate(tools):
        if tool.get("type") not in (None, "custom") or "input_schema" not in tool:
            raise client_error(
                f"tools.{index}: only client tools (name, input_schema) are "
                "supported by this model's backend",
                param=f"tools.{index}",
            )
        function = {"name": tool["name"], "parameters": tool["input_schema"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        result.append({"type": "function", "function": function})
    return result


def _chat_tool_choice(choice: dict[str, Any], body: dict[str, Any]) -> None:
    kind = choice.get("type")
    if kind == "auto":
        body["tool_choice"] = "auto"
    elif kind == "any":
        body["tool_choice"] = "required"
    elif kind == "none":
        body["tool_choice"] = "none"
    elif kind == "tool":
        body["tool_choice"] = {"type": "function", "function": {"name": choice.get("name")}}
    if choice.get("disable_parallel_tool_use"):
        body["parallel_tool_calls"] = False


def to_chat_body(body: dict[str, Any]) -> dict[str, Any]:
    """An OpenAI chat completion body for a (validated) Messages request body."""
    chat: dict[str, Any] = {
        "model": body["model"],
        "messages": _chat_messages(body),
        "max_tokens": body["max_tokens"],
    }
    for name in ("temperature", "top_p", "top_k"):
        if body.get(name) is not None:
            chat[name] = body[name]
    if body.get("stream"):  # the usage chunk feeds `message_delta`
        chat.update(stream=True, stream_options={"include_usage": True})
    if body.get("stop_sequences"):
        chat["stop"] = list(body["stop_sequences"])
    if body.get("tools"):
        chat["tools"] = _chat_tools(body["tools"])
    if body.get("tool_choice"):
        _chat_tool_choice(body["tool_choice"], chat)
    if body.get("routing") is not None:  # the gateway's own routing hints, as on chat
        chat["routing"] = body["routing"]
    user = (body.get("metadata") or {}).get("user_id")
    if user:
        chat["user"] = str(user)
    output_format = (body.get("output_config") or {}).get("format")
    if isinstance(output_format, dict) and output_format.get("type") == "json_schema":
        schema = {"name": "output", "schema": output_format.get("schema") or {}}
        chat["response_format"] = {"type": "json_schema", "json_schema": schema}
    return chat


def message_usage(usage: dict[str, Any] | None) -> dict[str, Any]:
    usage = usage or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    written = usage.get("cache_creation_input_tokens") or 0  # an Anthropic backend's writes
    return {
        "input_tokens": int(usage.get("prompt_tokens") or 0) - cached - written,
        "output_tokens": int(usage.get("completion_tokens") or 0),
        "cache_creation_input_tokens": written,
        "cache_read_input_tokens": cached,
    }


def stop_reason(choice: dict[str, Any], stops: list[str]) -> tuple[str, str | None]:
    """(stop_reason, stop_sequence): vLLM names the stop string that ended the text."""
    matched = choice.get("stop_reason")
    if choice.get("finish_reason") == "stop" and isinstance(matched, str) and matched in stops:
        return "stop_sequence", matched
    return STOP_REASONS.get(choice.get("finish_reason") or "stop", "end_turn"), None


def message_id(chat_id: Any) -> str:
    return f"msg_{chat_id}" if chat_id else "msg_gateway"


def to_message(completion: dict[str, Any], stops: list[str]) -> dict[str, Any]:
    """A chat completion as a Messages `Message`."""
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    content: list[dict[str, Any]] = []
    if reply.get("content"):
        content.append({"type": "text", "text": reply["content"]})
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            arguments = {"_raw_arguments": function.get("arguments")}  # keep what came
        content.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    reason, sequence = stop_reason(choice, stops)
    return {
        "id": message_id(completion.get("id")),
        "type": "message",
        "role": "assistant",
        "model": completion.get("model"),
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": message_usage(completion.get("usage")),
    }
