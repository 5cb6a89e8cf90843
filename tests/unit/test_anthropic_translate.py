"""OpenAI chat <-> Anthropic Messages translation, checked with the `anthropic` SDK's types."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from anthropic import types
from anthropic.types.message_create_params import MessageCreateParamsNonStreaming
from pydantic import TypeAdapter

from deployments import BackendError
from deployments._anthropic_translate import (
    SAMPLING,
    StreamTranslator,
    to_chat_completion,
    to_messages_params,
)
from tests.standins.anthropic_messages import _events, _force

PARAMS = TypeAdapter(MessageCreateParamsNonStreaming)
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}


def translate(body: dict[str, Any]) -> dict[str, Any]:
    params = to_messages_params(body, "claude-test", 1024)
    _force(PARAMS.validate_python(params))  # what we send is what the SDK accepts
    return params


def test_system_turns_are_lifted_and_sampling_options_mapped() -> None:
    params = translate(
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
                {"role": "user", "content": "Capital of France?"},
            ],
            "max_completion_tokens": 50,
            "temperature": 0.2,
            "top_p": 0.9,
            "stop": "\n\n",
            "user": "user-7",
            "seed": 3,
        }
    )
    assert params["system"] == "Be brief.\n\nNo emoji."
    assert [m["role"] for m in params["messages"]] == ["user", "assistant", "user"]
    assert params["messages"][2]["content"] == [{"type": "text", "text": "Capital of France?"}]
    assert params["max_tokens"] == 50
    # The SDK's Messages API dropped sampling knobs: sent only where the API still has them.
    assert ("temperature" in params) == ("temperature" in SAMPLING)
    assert ("top_p" in params) == ("top_p" in SAMPLING)
    assert params["stop_sequences"] == ["\n\n"]
    assert params["metadata"] == {"user_id": "user-7"}


def test_max_tokens_defaults_when_the_request_sets_none() -> None:
    params = translate({"messages": [{"role": "user", "content": "Hi"}]})
    assert params["max_tokens"] == 1024


def test_tools_calls_and_results_round_trip() -> None:
    params = translate(
        {
            "messages": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "t1",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "t2",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "t1", "content": "sunny"},
                {"role": "tool", "tool_call_id": "t2", "content": "rain"},
            ],
            "tools": [WEATHER_TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "parallel_tool_calls": False,
        }
    )
    assistant, results = params["messages"][1], params["messages"][2]
    assert assistant["content"][1] == {
        "type": "tool_use", "id": "t2", "name": "get_weather", "input": {"city": "Rome"},
    }  # fmt: skip
    # Both results in one user turn, right after the turn that called them.
    assert results["role"] == "user"
    assert [b["tool_use_id"] for b in results["content"]] == ["t1", "t2"]
    assert params["tools"][0]["input_schema"]["properties"] == {"city": {"type": "string"}}
    assert params["tool_choice"] == {
        "type": "tool", "name": "get_weather", "disable_parallel_tool_use": True,
    }  # fmt: skip


@pytest.mark.parametrize(
    ("choice", "expected"),
    [("auto", {"type": "auto"}), ("required", {"type": "any"}), ("none", {"type": "none"})],
)
def test_tool_choice_strings(choice: str, expected: dict[str, Any]) -> None:
    params = translate(
        {
            "messages": [{"role": "user", "content": "x"}],
            "tools": [WEATHER_TOOL],
            "tool_choice": choice,
        }
    )
    assert params["tool_choice"] == expected


def test_images_become_base64_or_url_sources() -> None:
    params = translate(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "What is this?"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}},
                        {"type": "image_url", "image_url": {"url": "https://x.test/a.jpg"}},
                    ],
                }
            ]
        }
    )
    blocks = params["messages"][0]["content"]
    assert blocks[1]["source"] == {"type": "base64", "media_type": "image/png", "data": "iVBO"}
    assert blocks[2]["source"] == {"type": "url", "url": "https://x.test/a.jpg"}


@pytest.mark.parametrize(
    ("extra", "param"),
    [
        ({"n": 2}, "n"),
        ({"logprobs": True}, "logprobs"),
        ({"response_format": {"type": "grammar"}}, "response_format"),
    ],
)
def test_what_anthropic_cannot_do_is_refused_but_may_fall_back(
    extra: dict[str, Any], param: str
) -> None:
    with pytest.raises(BackendError) as caught:
        to_messages_params({"messages": [{"role": "user", "content": "x"}], **extra}, "m", 10)
    assert caught.value.status == 400 and caught.value.param == param
    assert caught.value.code == "unsupported_parameter" and caught.value.retryable


def test_json_schema_becomes_structured_output_format() -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    params = translate(
        {
            "messages": [{"role": "user", "content": "x"}],
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "v", "schema": schema},
            },
        }
    )
    assert params["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
    loose = translate({"messages": [{"role": "user", "content": "x"}],
                       "response_format": {"type": "json_object"}})  # fmt: skip
    assert loose["output_config"]["format"]["schema"] == {"type": "object"}


def test_invalid_tool_call_arguments_are_the_clients_error() -> None:
    body = {
        "messages": [
            {"role": "user", "content": "x"},
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{no"}}
                ],
            },
        ]
    }
    with pytest.raises(BackendError) as caught:
        to_messages_params(body, "m", 10)
    assert not caught.value.retryable
    assert caught.value.param == "messages[1].tool_calls[0].function.arguments"


def _message(content: list[Any], reason: str) -> types.Message:
    return types.Message(
        id="msg_1",
        type="message",
        role="assistant",
        model="claude-test",
        content=content,
        stop_reason=reason,  # type: ignore[arg-type]
        stop_sequence=None,
        usage=types.Usage(input_tokens=11, output_tokens=7, cache_read_input_tokens=4),
    )


def test_message_becomes_chat_completion_with_tool_calls_and_usage() -> None:
    message = _message(
        [
            types.TextBlock(type="text", text="Let me check."),
            types.ToolUseBlock(
                type="tool_use", id="toolu_1", name="get_weather", input={"city": "Paris"}
            ),
        ],
        "tool_use",
    )
    completion = to_chat_completion(message, "claude-test")
    choice = completion["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] == "Let me check."
    call = choice["message"]["tool_calls"][0]
    assert call["id"] == "toolu_1" and orjson.loads(call["function"]["arguments"]) == {
        "city": "Paris"
    }
    # Cache reads are prompt tokens to an OpenAI client, and said apart for their price.
    assert completion["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 7,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4},
        "cache_creation_input_tokens": 0,
    }


@pytest.mark.parametrize(
    ("reason", "finish"),
    [("end_turn", "stop"), ("max_tokens", "length"), ("stop_sequence", "stop")],
)
def test_stop_reasons(reason: str, finish: str) -> None:
    completion = to_chat_completion(_message([types.TextBlock(type="text", text="a")], reason), "m")
    assert completion["choices"][0]["finish_reason"] == finish


def _chunks(message: types.Message, include_usage: bool) -> list[dict[str, Any]]:
    translator = StreamTranslator("claude-test", include_usage)
    data = b"".join(
        translator.translate(event)
        for event in _events(message)
        if not isinstance(event, dict)  # ping
    )
    events = [e.removeprefix(b"data: ") for e in data.split(b"\n\n") if e]
    assert events[-1] == b"[DONE]"
    return [orjson.loads(e) for e in events[:-1]]


def test_stream_events_become_chunks_with_streamed_tool_arguments_and_usage() -> None:
    message = _message(
        [
            types.TextBlock(type="text", text="Checking the weather"),
            types.ToolUseBlock(
                type="tool_use", id="toolu_1", name="get_weather", input={"city": "Paris"}
            ),
        ],
        "tool_use",
    )
    chunks = _chunks(message, include_usage=True)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Checking the weather"
    calls = [
        call
        for c in chunks
        if c["choices"]
        for call in c["choices"][0]["delta"].get("tool_calls") or []
    ]
    assert calls[0]["id"] == "toolu_1" and calls[0]["function"]["name"] == "get_weather"
    arguments = "".join(call["function"]["arguments"] for call in calls)
    assert orjson.loads(arguments) == {"city": "Paris"}
    assert len(calls) >= 3  # the arguments arrived in pieces and were passed on in pieces
    assert chunks[-2]["choices"][0]["finish_reason"] == "tool_calls"
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {
        "prompt_tokens": 15,
        "completion_tokens": 7,
        "total_tokens": 22,
        "prompt_tokens_details": {"cached_tokens": 4},
        "cache_creation_input_tokens": 0,
    }


def test_stream_without_include_usage_has_no_usage_chunk() -> None:
    chunks = _chunks(_message([types.TextBlock(type="text", text="hi")], "end_turn"), False)
    assert all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
