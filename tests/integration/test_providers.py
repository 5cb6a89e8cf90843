"""Provider adapters against real servers speaking their wire protocol: vLLM's OpenAI server and
the Anthropic Messages stand-in (checked with the `anthropic` SDK's types), via the gateway."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import orjson
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def received(stack: Stack) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = httpx.get(f"{stack.anthropic_url}/_received").json()
    return result


@pytest.fixture
def anthropic_standin(stack: Stack) -> Stack:
    httpx.post(f"{stack.anthropic_url}/_reset")
    return stack


# ---- OpenAI-compatible pass-through -------------------------------------------------------


@pytest.mark.parametrize("backend", ["upstream", "tiny"])
def test_openai_parameters_reach_the_engine(stack: Stack, backend: str) -> None:
    completion = stack.client().chat.completions.create(
        model=backend,
        messages=[{"role": "user", "content": "Say something"}],
        n=2,
        max_tokens=5,
        temperature=1.0,
        seed=7,
        logprobs=True,
        top_logprobs=2,
        stop=["\n\n\n"],
        user="user-1",
    )
    assert len(completion.choices) == 2  # n
    logprobs = completion.choices[0].logprobs
    assert logprobs is not None and logprobs.content  # logprobs + top_logprobs
    assert len(logprobs.content[0].top_logprobs) == 2
    again = stack.client().chat.completions.create(
        model=backend,
        messages=[{"role": "user", "content": "Say something"}],
        n=2,
        max_tokens=5,
        temperature=1.0,
        seed=7,
    )
    assert again.choices[0].message.content == completion.choices[0].message.content  # seed


def test_every_openai_parameter_is_forwarded_as_sent(stack: Stack) -> None:
    """What the upstream received, read back from it (a random tiny model cannot show tool
    calls or schema-shaped output, so the engine tests above cover what it can show)."""
    stub_url = stack.stubs["backup"][0]
    httpx.post(f"{stub_url}/_reset")
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}}
    extra = {
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "verdict", "schema": schema, "strict": True},
        },
        "n": 2,
        "stop": ["END"],
        "seed": 11,
        "logprobs": True,
        "top_logprobs": 3,
        "user": "user-9",
        "temperature": 0.4,
        "frequency_penalty": 0.5,
        "metadata": {"team": "search"},
    }
    body = {"model": "backup", "messages": [{"role": "user", "content": "hi"}], **extra}
    response = httpx.post(f"{stack.base_url}/chat/completions", json=body, timeout=30)
    assert response.status_code == 200, response.text
    streamed = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={**body, "stream": True, "stream_options": {"include_usage": True}},
        timeout=30,
    )
    assert streamed.status_code == 200 and '"usage"' in streamed.text
    plain, stream = httpx.get(f"{stub_url}/_received").json()
    assert plain == {**body, "model": "stub"}  # only the model id is ours to change
    assert stream["stream_options"] == {"include_usage": True} and stream["stream"] is True


def test_rejected_key_is_a_misconfigured_backend_never_the_key(stack: Stack) -> None:
    response = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "wrongkey", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert error["code"] == "backend_auth_failed"
    assert all(secret not in response.text for secret in stack.secrets)
    # The backend is now out of rotation: the next request is refused at once, with a wait.
    again = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "wrongkey", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert again.status_code == 503 and int(again.headers["retry-after"]) >= 1
    assert "credentials" in again.json()["error"]["message"]


# ---- Anthropic -----------------------------------------------------------------------------


def test_anthropic_chat_with_system_multi_turn_and_stop(anthropic_standin: Stack) -> None:
    stack = anthropic_standin
    completion = stack.client().chat.completions.create(
        model="claude",
        messages=[
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Hi."},
            {"role": "user", "content": "Repeat after me: red green blue"},
        ],
        stop=["blue"],
        max_tokens=40,
        temperature=0.3,
        top_p=0.8,
        response_format={"type": "json_object"},
    )
    assert completion.model == "claude-standin"
    assert completion.choices[0].message.content == "echo: Repeat after me: red green"
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.completion_tokens == 6
    (sent,) = received(stack)
    assert sent["system"] == "You are terse."
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["stop_sequences"] == ["blue"] and sent["max_tokens"] == 40
    assert sent["model"] == "claude-standin"
    assert sent["output_config"] == {
        "format": {"type": "json_schema", "schema": {"type": "object"}}
    }


def test_anthropic_max_tokens_is_length(anthropic_standin: Stack) -> None:
    completion = anthropic_standin.client().chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "one two three four"}], max_tokens=2
    )
    assert completion.choices[0].finish_reason == "length"
    assert completion.choices[0].message.content == "echo: one"


def test_anthropic_tool_call_and_result_round_trip(anthropic_standin: Stack) -> None:
    stack = anthropic_standin
    client = stack.client()
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    first = client.chat.completions.create(
        model="claude",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert first.choices[0].finish_reason == "tool_calls"
    call = (first.choices[0].message.tool_calls or [])[0]
    assert call.function.name == "get_weather"  # type: ignore[union-attr]
    assert orjson.loads(call.function.arguments) == {"city": "Paris"}  # type: ignore[union-attr]
    messages += [
        first.choices[0].message.model_dump(exclude_none=True),
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    second = client.chat.completions.create(
        model="claude",
        messages=messages,
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    )
    assert second.choices[0].message.content == "echo: sunny, 21 C"
    sent = received(stack)[-1]
    assert sent["messages"][1]["content"][0]["type"] == "tool_use"
    assert sent["messages"][2]["content"][0] == {
        "type": "tool_result", "tool_use_id": call.id, "content": "sunny, 21 C",
    }  # fmt: skip


def test_anthropic_stream_with_tool_arguments_and_usage(anthropic_standin: Stack) -> None:
    stream = anthropic_standin.client().chat.completions.create(
        model="claude",
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    pieces = [
        call.function.arguments
        for chunk in chunks
        if chunk.choices
        for call in chunk.choices[0].delta.tool_calls or []
        if call.function and call.function.arguments
    ]
    assert len(pieces) >= 2 and orjson.loads("".join(pieces)) == {"city": "Paris"}
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] == "tool_calls"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 12


def test_anthropic_text_stream(anthropic_standin: Stack) -> None:
    stream = anthropic_standin.client().chat.completions.create(
        model="claude", messages=[{"role": "user", "content": "red green"}], stream=True
    )
    text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == "echo: red green"


def test_anthropic_overload_is_retried_honouring_retry_after(anthropic_standin: Stack) -> None:
    stack = anthropic_standin
    httpx.post(f"{stack.anthropic_url}/_fail", json={"status": 529, "count": 1, "retry_after": 1})
    response = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-attempts"] == "2"
    assert len(received(stack)) == 2


def test_anthropic_unsupported_parameter_falls_back(anthropic_standin: Stack) -> None:
    response = httpx.post(
        f"{anthropic_standin.base_url}/chat/completions",
        json={
            "model": "claude-then-echo",
            "messages": [{"role": "user", "content": "hi"}],
            "logprobs": True,
        },
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-gateway-backend"] == "echo"
    direct = httpx.post(
        f"{anthropic_standin.base_url}/chat/completions",
        json={"model": "claude", "messages": [{"role": "user", "content": "hi"}], "n": 2},
        timeout=30,
    )
    assert direct.status_code == 400 and direct.json()["error"]["param"] == "n"


def test_anthropic_rejects_legacy_completions_clearly(anthropic_standin: Stack) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        anthropic_standin.client().completions.create(model="claude", prompt="hi")
    assert caught.value.code == "unsupported_endpoint"
