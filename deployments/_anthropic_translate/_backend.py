"""The Anthropic backend's side: OpenAI chat requests as Messages requests, and Messages
replies (whole, and stream events) as chat completions.

Pure functions over plain dicts and the `anthropic` SDK's event objects; no I/O.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from deployments._anthropic_translate._usage import Input, openai_usage
from deployments._base import BackendError, Recovery, client_error, max_output_tokens

# Anthropic stop reasons -> OpenAI finish reasons.
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}
# Parameters Anthropic cannot honour. Another backend may, so a fallback is tried.
_UNSUPPORTED = ("logprobs", "top_logprobs", "logit_bias", "audio", "prediction")


def _api_params() -> frozenset[str]:
    """The request fields the installed SDK's Messages API defines. Sampling knobs
    (temperature, top_p) were dropped from it: they are forwarded only where it has them."""
    from anthropic.types.message_create_params import MessageCreateParamsBase

    return frozenset(MessageCreateParamsBase.__annotations__)


SAMPLING = tuple(name for name in ("temperature", "top_p") if name in _api_params())


def native_params(body: dict[str, Any], model: str) -> dict[str, Any]:
    """`messages.create` arguments for a client's own Messages body: the backend's model,
    and what the installed SDK does not name goes as `extra_body`, untouched."""
    known = _api_params()
    params = {k: v for k, v in body.items() if k in known and k not in ("model", "stream")}
    extra = {k: v for k, v in body.items() if k not in known and k != "stream"}
    if extra:
        params["extra_body"] = extra
    return {**params, "model": model}


def _unsupported(param: str, why: str) -> BackendError:
    return BackendError(
        f"{why} (not supported by the Anthropic Messages API)",
        status=400,
        type="invalid_request_error",
        param=param,
        code="unsupported_parameter",
        recovery=Recovery.FALLBACK,
    )


def _text_of(content: Any, param: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    parts = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "text":
            parts.append(str(part.get("text", "")))
        else:
            raise client_error(f"{param}: only text parts are allowed here", param=param)
    return "\n".join(parts)


def _image_block(part: dict[str, Any], param: str) -> dict[str, Any]:
    url = (part.get("image_url") or {}).get("url", "")
    if url.startswith("data:"):
        header, _, data = url.partition(",")
        media_type = header[5:].split(";")[0]
        if ";base64" not in header or not data:
            raise client_error(f"{param}: data URLs must be base64-encoded", param=param)
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise client_error(f"{param}: image_url.url must be an http(s) or data URL", param=param)


def _content_blocks(content: Any, param: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks = []
    for index, part in enumerate(content):
        where = f"{param}[{index}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            blocks.append({"type": "text", "text": str(part.get("text", ""))})
        elif kind == "image_url":
            blocks.append(_image_block(part, where))
        else:
            raise _unsupported(where, f"content part type {kind!r}")
    return blocks


def _tool_use_blocks(tool_calls: list[dict[str, Any]], param: str) -> list[dict[str, Any]]:
    blocks = []
    for index, call in enumerate(tool_calls):
        function = call.get("function") or {}
        where = f"{param}[{index}].function.arguments"
        try:
            arguments = orjson.loads(function.get("arguments") or "{}")
        except orjson.JSONDecodeError:
            raise client_error(f"{where} is not valid JSON", param=where) from None
        if not isinstance(arguments, dict):
            raise client_error(f"{where} must be a JSON object", param=where)
        blocks.append(
            {
                "type": "tool_use",
                "id": call.get("id"),
                "name": function.get("name"),
                "input": arguments,
            }
        )
    return blocks


def _messages(messages: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    """(system prompt, Anthropic messages): system turns are lifted out, tool results become
    user turns, and consecutive turns of one role are merged (tool results must all follow
    the assistant turn that called them)."""
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for index, message in enumerate(messages):
        role, param = message.get("role"), f"messages[{index}]"
        if role in ("system", "developer"):
            system.append(_text_of(message.get("content"), f"{param}.content"))
            continue
        if role == "user":
            blocks = _content_blocks(message.get("content"), f"{param}.content")
            anthropic_role = "user"
        elif role == "assistant":
            blocks = _content_blocks(message.get("content"), f"{param}.content")
            blocks += _tool_use_blocks(message.get("tool_calls") or [], f"{param}.tool_calls")
            anthropic_role = "assistant"
        elif role == "tool":
            result = {
                "type": "tool_result",
                "tool_use_id": message.get("tool_call_id"),
                "content": _text_of(message.get("content"), f"{param}.content"),
            }
            blocks, anthropic_role = [result], "user"
        else:
            raise _unsupported(f"{param}.role", f"role {role!r}")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == anthropic_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": anthropic_role, "content": blocks})
    return "\n\n".join(s for s in system if s), turns


def _tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    result = []
    for index, tool in enumerate(tools):
        if tool.get("type", "function") != "function":
            raise _unsupported(f"tools[{index}].type", f"tool type {tool.get('type')!r}")
        function = tool.get("function") or {}
        entry: dict[str, Any] = {
            "name": function.get("name"),
            "input_schema": function.get("parameters") or {"type": "object", "properties": {}},
        }
        if function.get("description"):
            entry["description"] = function["description"]
        result.append(entry)
    return result


def _tool_choice(choice: Any, parallel: Any) -> dict[str, Any] | None:
    if choice is None and parallel is not False:
        return None
    if choice is None or choice == "auto":
        result: dict[str, Any] = {"type": "auto"}
    elif choice == "none":
        return {"type": "none"}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, dict) and (choice.get("function") or {}).get("name"):
        result = {"type": "tool", "name": choice["function"]["name"]}
    else:
        raise client_error("tool_choice: unsupported value", param="tool_choice")
    if parallel is False:
        result["disable_parallel_tool_use"] = True
    return result


def _output_format(response_format: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAI `response_format` -> Messages `output_config.format` (structured outputs)."""
    kind = response_format.get("type", "text")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"type": "json_schema", "schema": {"type": "object"}}
    if kind == "json_schema":
        schema = (response_format.get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise client_error("response_format.json_schema.schema: an object is required",
                               param="response_format.json_schema.schema")  # fmt: skip
        return {"type": "json_schema", "schema": schema}
    raise _unsupported("response_format", f"response_format {kind!r}")


def to_messages_params(body: dict[str, Any], model: str, default_max_tokens: int) -> dict[str, Any]:
    """The keyword arguments of `messages.create` for an OpenAI chat completion body."""
    for name in _UNSUPPORTED:
        if body.get(name):
            raise _unsupported(name, f"{name!r}")
    if (body.get("n") or 1) > 1:
        raise _unsupported("n", "n > 1")
    output_format = _output_format(body.get("response_format") or {})
    system, messages = _messages(body.get("messages") or [])
    if not messages:
        raise client_error("messages: at least one user or assistant message is required",
                           param="messages")  # fmt: skip
    params: dict[str, Any] = {
        "model": model,
        "messages": messages,
        "max_tokens": max_output_tokens(body) or default_max_tokens,
    }  # fmt: skip
    if system:
        params["system"] = system
    if output_format is not None:
        params["output_config"] = {"format": output_format}
    for name in SAMPLING:
        if body.get(name) is not None:
            params[name] = body[name]
    stop = body.get("stop")
    if stop:
        params["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("tools"):
        params["tools"] = _tools(body["tools"])
    choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
    if choice is not None and (params.get("tools") or choice["type"] == "none"):
        params["tool_choice"] = choice
    if body.get("user"):
        params["metadata"] = {"user_id": str(body["user"])}
    return params


def to_chat_completion(message: Any, model: str) -> dict[str, Any]:
    """An Anthropic `Message` as an OpenAI `chat.completion`."""
    texts, tool_calls = [], []
    for block in message.content:
        if block.type == "text":
            texts.append(block.text)
        elif block.type == "tool_use":
            tool_calls.append(
                {
                    "id": block.id,
                    "type": "function",
                    "function": {
                        "name": block.name,
                        "arguments": orjson.dumps(block.input).decode(),
                    },
                }
            )
    reply: dict[str, Any] = {"role": "assistant", "content": "".join(texts) if texts else None}
    if tool_calls:
        reply["tool_calls"] = tool_calls
    return {
        "id": message.id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": reply,
                "finish_reason": FINISH_REASONS.get(message.stop_reason or "", "stop"),
                "logprobs": None,
            }
        ],
        "usage": openai_usage(Input.of(message.usage), int(message.usage.output_tokens or 0)),
    }


class StreamTranslator:
    """Turns Messages stream events into OpenAI `chat.completion.chunk` SSE bytes."""

    def __init__(self, model: str, include_usage: bool) -> None:
        self.model = model
        self.include_usage = include_usage
        self.id = ""
        self.created = int(time.time())
        self.input = Input()
        self.output_tokens = 0
        self._tool_index: dict[int, int] = {}  # content block index -> tool_calls index

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        chunk = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"

    def translate(self, event: Any) -> bytes:
        kind = event.type
        if kind == "message_start":
            self.id = event.message.id
            self.input = Input.of(event.message.usage)
            self.output_tokens = int(event.message.usage.output_tokens or 0)
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start" and event.content_block.type == "tool_use":
            index = self._tool_index[event.index] = len(self._tool_index)
            call = {
                "index": index,
                "id": event.content_block.id,
                "type": "function",
                "function": {"name": event.content_block.name, "arguments": ""},
            }
            return self._chunk({"tool_calls": [call]})
        if kind == "content_block_start" and event.content_block.type == "text":
            text = event.content_block.text
            return self._chunk({"content": text}) if text else b""
        if kind == "content_block_delta":
            delta = event.delta
            if delta.type == "text_delta":
                return self._chunk({"content": delta.text})
            if delta.type == "input_json_delta" and event.index in self._tool_index:
                call = {"index": self._tool_index[event.index],
                        "function": {"arguments": delta.partial_json}}  # fmt: skip
                return self._chunk({"tool_calls": [call]})
            return b""  # thinking and signature deltas have no OpenAI counterpart
        if kind == "message_delta":
            usage = event.usage
            if getattr(usage, "output_tokens", None) is not None:
                self.output_tokens = int(usage.output_tokens)
            if getattr(usage, "input_tokens", None):
                self.input = Input.of(usage)
            reason = FINISH_REASONS.get(event.delta.stop_reason or "", "stop")
            return self._chunk({}, reason)
        if kind == "message_stop":
            tail = b""
            if self.include_usage:
                usage_chunk = {
                    "id": self.id,
                    "object": "chat.completion.chunk",
                    "created": self.created,
                    "model": self.model,
                    "choices": [],
                    "usage": openai_usage(self.input, self.output_tokens),
                }
                tail = b"data: " + orjson.dumps(usage_chunk) + b"\n\n"
            return tail + b"data: [DONE]\n\n"
        return b""  # ping, content_block_stop
