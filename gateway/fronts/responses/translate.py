"""OpenAI's Responses API over chat completions: a Responses request (with the conversation
a `previous_response_id` names) as a chat body, and a chat completion as a `Response`.
Pure functions over plain dicts."""

from __future__ import annotations

import secrets
import time
from typing import Any

from gateway.errors import OpenAIError

# Chat finish reasons that leave a response incomplete, and why (Responses' names).
INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _unsupported(param: str, what: str) -> OpenAIError:
    return OpenAIError(
        f"{what} is not supported by this gateway.",
        status=400,
        param=param,
        code="unsupported_parameter",
    )


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for index, part in enumerate(content or []):
        if part.get("type") not in ("input_text", "output_text", "text"):
            raise _unsupported(f"{param}[{index}]", f"Content part type {part.get('type')!r} here")
        texts.append(str(part.get("text", "")))
    return "".join(texts)


def _user_content(content: Any, param: str) -> Any:
    if isinstance(content, str):
        return content
    parts: list[dict[str, Any]] = []
    for index, part in enumerate(content):
        kind = part.get("type")
        if kind in ("input_text", "output_text"):
            parts.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "input_image" and part.get("image_url"):
            image = {"url": part["image_url"], "detail": part.get("detail") or "auto"}
            parts.append({"type": "image_url", "image_url": image})
        else:
            raise _unsupported(f"{param}[{index}]", f"Content part type {kind!r}")
    return parts


def _append_call(messages: list[dict[str, Any]], item: dict[str, Any]) -> None:
    call = {
        "id": item.get("call_id"),
        "type": "function",
        "function": {"name": item.get("name"), "arguments": item.get("arguments") or "{}"},
    }
    last = messages[-1] if messages else None
    if last is not None and last["role"] == "assistant" and last.get("_calls"):
        last["tool_calls"].append(call)
    else:
        messages.append({"role": "assistant", "content": None, "tool_calls": [call], "_calls": 1})


def items_to_messages(items: list[dict[str, Any]], param: str = "input") -> list[dict[str, Any]]:
    """Responses input (and output) items as chat messages."""
    messages: list[dict[str, Any]] = []
    for index, item in enumerate(items):
        where, kind = f"{param}[{index}]", item.get("type", "message")
        if kind == "message":
            role = item.get("role")
            if role in ("system", "developer"):
                messages.append({"role": "system", "content": _text(item.get("content"), where)})
            elif role == "assistant":
                messages.append({"role": "assistant", "content": _text(item.get("content"), where)})
            elif role == "user":
                content = _user_content(item.get("content"), f"{where}.content")
                messages.append({"role": "user", "content": content})
            else:
                raise OpenAIError(
                    f"Invalid value for '{where}.role'.", status=400, param=f"{where}.role"
                )
        elif kind == "function_call":
            _append_call(messages, item)
        elif kind == "function_call_output":
            output = item.get("output")
            text = output if isinstance(output, str) else _text(output, f"{where}.output")
            messages.append({"role": "tool", "tool_call_id": item.get("call_id"), "content": text})
        elif kind not in ("reasoning", "file_search_call"):  # nothing chat can carry
            raise _unsupported(where, f"Input item type {kind!r}")
    for message in messages:
        message.pop("_calls", None)
    return messages


def input_items(body: dict[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("input")
    if isinstance(raw, str):
        return [{"type": "message", "role": "user", "content": raw}]
    return list(raw or [])


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for index, tool in enumerate(tools):
        if tool.get("type") == "file_search":
            continue  # the gateway runs it (fronts.responses.file_search)
        if tool.get("type") != "function":
            raise _unsupported(f"tools[{index}].type", f"Tool type {tool.get('type')!r}")
        function = {
            k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool
        }
        result.append({"type": "function", "function": function})
    return result


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, dict) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice.get("name")}}
    if isinstance(choice, dict) and choice.get("type") == "file_search":
        return None  # run before the model is asked
    raise _unsupported("tool_choice", "This tool_choice")


def _response_format(text: dict[str, Any]) -> dict[str, Any] | None:
    fmt = text.get("format") or {"type": "text"}
    if fmt.get("type") == "json_schema":
        schema = {k: fmt[k] for k in ("name", "schema", "strict", "description") if k in fmt}
        return {"type": "json_schema", "json_schema": schema}
    if fmt.get("type") == "json_object":
        return {"type": "json_object"}
    return None


def to_chat_body(body: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
    """The chat body for a Responses request; `history` is the stored conversation that
    `previous_response_id` continues (its instructions are not carried over, as OpenAI does)."""
    messages = []
    if body.get("instructions"):
        messages.append({"role": "system", "content": body["instructions"]})
    messages += items_to_messages(history, "previous_response_id")
    messages += items_to_messages(input_items(body))
    chat: dict[str, Any] = {"model": body.get("model"), "messages": messages}
    names = {
        "max_output_tokens": "max_tokens",
        "temperature": "temperature",
        "top_p": "top_p",
        "parallel_tool_calls": "parallel_tool_calls",
        "user": "user",
    }
    for name, chat_name in names.items():
        if body.get(name) is not None:
            chat[chat_name] = body[name]
    if body.get("routing") is not None:  # the gateway's own routing hints, as on chat
        chat["routing"] = body["routing"]
    tools = _tools(body.get("tools") or [])
    if tools:
        chat["tools"] = tools
    choice = _tool_choice(body["tool_choice"]) if body.get("tool_choice") is not None else None
    if choice is not None and (tools or not body.get("tools")):  # not for file_search alone
        chat["tool_choice"] = choice
    response_format = _response_format(body.get("text") or {})
    if response_format is not None:
        chat["response_format"] = response_format
    if body.get("stream"):
        chat.update(stream=True, stream_options={"include_usage": True})
    return chat


def usage(chat_usage: dict[str, Any] | None) -> dict[str, Any] | None:
    if not chat_usage:
        return None
    cached = (chat_usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0
    prompt, output = (
        int(chat_usage.get("prompt_tokens") or 0),
        int(chat_usage.get("completion_tokens") or 0),
    )
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
        "output_tokens": output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + output,
    }


def message_item(text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {
        "type": "message",
        "id": new_id("msg"),
        "status": status,
        "role": "assistant",
        "content": [part],
    }


def call_item(call_id: str, name: str, arguments: str, status: str = "completed") -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": new_id("fc"),
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def envelope(body: dict[str, Any], response_id: str, model: str) -> dict[str, Any]:
    """A `Response` with what the request set, before any output."""
    return {
        "id": response_id,
        "object": "response",
        "created_at": int(time.time()),
        "status": "in_progress",
        "model": model,
        "output": [],
        "error": None,
        "incomplete_details": None,
        "instructions": body.get("instructions"),
        "max_output_tokens": body.get("max_output_tokens"),
        "metadata": body.get("metadata") or {},
        "parallel_tool_calls": body.get("parallel_tool_calls", True),
        "previous_response_id": body.get("previous_response_id"),
        "store": body.get("store", True),
        "temperature": body.get("temperature"),
        "text": body.get("text") or {"format": {"type": "text"}},
        "tool_choice": body.get("tool_choice", "auto"),
        "tools": body.get("tools") or [],
        "top_p": body.get("top_p"),
        "truncation": "disabled",
        "usage": None,
        "user": body.get("user"),
    }


def finish(response: dict[str, Any], finish_reason: str | None, chat_usage: Any) -> None:
    """Complete (or mark incomplete) a response in place."""
    reason = INCOMPLETE.get(finish_reason or "")
    response["status"] = "incomplete" if reason else "completed"
    response["incomplete_details"] = {"reason": reason} if reason else None
    response["usage"] = usage(chat_usage)


def to_response(
    body: dict[str, Any], response_id: str, completion: dict[str, Any]
) -> dict[str, Any]:
    """A chat completion as a `Response`."""
    response = envelope(body, response_id, str(completion.get("model") or body.get("model")))
    choice = (completion.get("choices") or [{}])[0]
    reply = choice.get("message") or {}
    if reply.get("content"):
        response["output"].append(message_item(reply["content"]))
    for call in reply.get("tool_calls") or []:
        function = call.get("function") or {}
        response["output"].append(
            call_item(
                call.get("id") or new_id("call"),
                str(function.get("name") or ""),
                function.get("arguments") or "",
            )
        )
    finish(response, choice.get("finish_reason"), completion.get("usage"))
    return response
