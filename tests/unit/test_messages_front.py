"""Anthropic Messages in front of chat backends: requests become chat bodies the gateway
accepts, chat answers become Messages replies and events the `anthropic` SDK's types accept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic import types
from pydantic import TypeAdapter

from deployments import BackendError
from deployments._anthropic_translate import to_messages_params
from gateway.core.protocol import parse_body
from gateway.fronts.messages import MessagesStream, to_chat_body, to_message
from tests.helpers import TOOL_CALL_STREAM

EVENT = TypeAdapter(types.RawMessageStreamEvent)
WEATHER = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}
CONVERSATION: dict[str, Any] = {
    "model": "auto",
    "max_tokens": 64,
    "system": [{"type": "text", "text": "Be brief."}],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Weather where this photo was taken?"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                             "data": "iVBORw0KGgo="}},
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Paris, by the tower.", "signature": "s"},
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1",
                 "content": [{"type": "text", "text": "Sunny, 21 C"}]},
                {"type": "text", "text": "Thanks. Umbrella?"},
            ],
        },
    ],
    "tools": [WEATHER],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["\n\nHuman:"],
    "temperature": 0.3,
    "top_k": 5,
    "metadata": {"user_id": "u-7"},
    "stream": True,
}  # fmt: skip


def test_a_conversation_with_images_and_tools_becomes_a_valid_chat_body() -> None:
    chat = to_chat_body(CONVERSATION)
    assert parse_body(chat, "chat/completions") is chat  # the gateway's own OpenAI checks
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant", "tool", "user"]
    assert chat["messages"][0]["content"] == "Be brief."
    image = chat["messages"][1]["content"][1]
    assert image == {
        "type": "image_url",
        "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="},
    }
    assistant = chat["messages"][2]
    assert assistant["content"] == "Checking."  # the thinking block is the backend's own
    assert assistant["tool_calls"][0]["function"] == {
        "name": "get_weather",
        "arguments": '{"city":"Paris"}',
    }
    assert chat["messages"][3] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": "Sunny, 21 C",
    }
    assert chat["tools"][0]["function"]["parameters"] == WEATHER["input_schema"]
    assert chat["tool_choice"] == "required" and chat["parallel_tool_calls"] is False
    assert chat["stop"] == ["\n\nHuman:"] and chat["user"] == "u-7"
    assert (chat["max_tokens"], chat["temperature"], chat["top_k"]) == (64, 0.3, 5)
    assert chat["stream"] is True and chat["stream_options"] == {"include_usage": True}


def test_both_directions_agree_messages_to_chat_to_messages_keeps_the_conversation() -> None:
    """The backend side of the same module turns the chat body back into Messages params."""
    body = {k: v for k, v in CONVERSATION.items() if k != "stream"}
    params = to_messages_params(to_chat_body(body), "claude", 1024)
    assert params["system"] == "Be brief."
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    tool_use = params["messages"][1]["content"][-1]
    assert tool_use == {"type": "tool_use", "id": "toolu_1", "name": "get_weather",
                        "input": {"city": "Paris"}}  # fmt: skip
    assert params["messages"][2]["content"][0]["type"] == "tool_result"
    assert params["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert params["tools"][0]["input_schema"] == WEATHER["input_schema"]


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, "auto"),
        ({"type": "none"}, "none"),
        ({"type": "tool", "name": "get_weather"},
         {"type": "function", "function": {"name": "get_weather"}}),
    ],
)  # fmt: skip
def test_tool_choices(choice: dict[str, Any], expected: Any) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}],
            "tools": [WEATHER], "tool_choice": choice}  # fmt: skip
    assert to_chat_body(body)["tool_choice"] == expected


@pytest.mark.parametrize(
    "block",
    [
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "x"}},
        {"type": "server_tool_use", "id": "s", "name": "web_search", "input": {}},
    ],
)
def test_blocks_chat_cannot_carry_are_the_clients_error(block: dict[str, Any]) -> None:
    body = {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [block]}]}
    with pytest.raises(BackendError) as raised:
        to_chat_body(body)
    assert raised.value.status == 400 and block["type"] in raised.value.message


def completion(finish: str, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "tiny",
        "choices": [{"index": 0, "message": {"role": "assistant", **message},
                     "finish_reason": finish, "stop_reason": message.pop("_stop", None)}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }  # fmt: skip


def test_a_completion_with_text_and_tool_calls_is_a_valid_message() -> None:
    call = {"id": "call_1", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}  # fmt: skip
    message = to_message(completion("tool_calls", content="Let me look.", tool_calls=[call]), [])
    parsed = types.Message.model_validate(message)
    assert parsed.stop_reason == "tool_use"
    assert [block.type for block in parsed.content] == ["text", "tool_use"]
    assert parsed.content[1].input == {"city": "Rome"}  # type: ignore[union-attr]
    assert (parsed.usage.input_tokens, parsed.usage.output_tokens) == (12, 5)


@pytest.mark.parametrize(
    ("finish", "stop", "reason", "sequence"),
    [
        ("stop", None, "end_turn", None),
        ("stop", "END", "stop_sequence", "END"),
        ("length", None, "max_tokens", None),
        ("content_filter", None, "refusal", None),
    ],
)
def test_stop_reasons(finish: str, stop: str | None, reason: str, sequence: str | None) -> None:
    raw = completion(finish, content="x")
    raw["choices"][0]["stop_reason"] = stop  # vLLM names the stop string that matched
    message = types.Message.model_validate(to_message(raw, ["END"]))
    assert (message.stop_reason, message.stop_sequence) == (reason, sequence)


def parse_events(data: bytes) -> list[Any]:
    events = []
    for raw in data.split(b"\n\n"):
        if not raw:
            continue
        name, payload = raw.split(b"\n")
        if name == b"event: ping":  # the SDK skips pings: not one of its event types
            assert orjson.loads(payload.removeprefix(b"data: ")) == {"type": "ping"}
            events.append(None)
            continue
        event = EVENT.validate_python(orjson.loads(payload.removeprefix(b"data: ")))
        assert name == b"event: " + event.type.encode()
        events.append(event)
    return events


def test_a_streamed_answer_is_the_messages_event_sequence_in_any_chunking() -> None:
    upstream = TOOL_CALL_STREAM
    for size in (7, 64, len(upstream)):  # SSE events cut anywhere between feeds
        translator = MessagesStream("auto", [], input_tokens=8)
        out = b"".join(
            translator.feed(upstream[i : i + size]) for i in range(0, len(upstream), size)
        )
        events = parse_events(out + translator.close())
        kinds = ["ping" if e is None else e.type for e in events]
        block = ["content_block_start", "content_block_delta", "content_block_delta",
                 "content_block_stop"]  # fmt: skip
        assert kinds == ["message_start", "ping", *block, *block, "message_delta", "message_stop"]
        assert events[0].message.usage.input_tokens == 8  # the estimate, until usage comes
        assert events[6].content_block.type == "tool_use"
        arguments = "".join(e.delta.partial_json for e in events[7:9])
        assert orjson.loads(arguments) == {"city": "Rome"}
        final = events[10]
        assert final.delta.stop_reason == "tool_use"
        assert (final.usage.input_tokens, final.usage.output_tokens) == (9, 7)


def test_a_broken_stream_ends_in_an_error_event() -> None:
    broken = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    broken += b'data: {"error": {"message": "upstream went away", "type": "server_error"}}\n\n'
    translator = MessagesStream("auto", [])
    out = translator.feed(broken + b"data: [DONE]\n\n") + translator.close()
    last = out.strip().split(b"\n\n")[-1]
    assert last.startswith(b"event: error\n")
    error = orjson.loads(last.split(b"\n")[1].removeprefix(b"data: "))
    assert error == {
        "type": "error",
        "error": {"type": "api_error", "message": "upstream went away"},
    }


def test_the_text_of_a_passed_through_message_reaches_the_request_log() -> None:
    from llmops import response_text

    text = {"type": "text", "text": "Checking."}
    call = {"type": "tool_use", "id": "t", "name": "f", "input": {}}
    message = {"type": "message", "content": [text, call]}
    assert response_text(message) == "Checking."
