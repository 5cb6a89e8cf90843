"""`POST /v1/messages` on the running stack, driven by the official `anthropic` SDK: served by
a vLLM engine, by vLLM's OpenAI server (translated both ways) and by the Anthropic stand-in
(passed through untranslated), streamed and not, with tools, fallbacks, Anthropic-shaped
errors, and one ledger row per request marked `messages`."""

from __future__ import annotations

import sqlite3
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from anthropic import types
from pydantic import TypeAdapter

from tests.helpers import wait_until
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
EVENT = TypeAdapter(types.RawMessageStreamEvent)
HI = [{"role": "user", "content": "Say hello."}]
WEATHER: Any = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.root_url, api_key="unused", max_retries=0)


def raw_events(stack: Stack, body: dict[str, Any]) -> list[Any]:
    """The SSE events of a streamed request, each checked against the SDK's event types and
    its `event:` line (pings are not SDK types: checked by shape)."""
    events: list[Any] = []
    headers = {"anthropic-version": "2023-06-01"}
    with httpx.stream(
        "POST", f"{stack.root_url}/v1/messages", json={**body, "stream": True}, headers=headers,
        timeout=60,
    ) as response:  # fmt: skip
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line[7:]
            elif line.startswith("data: "):
                data = orjson.loads(line[6:])
                assert data["type"] == name
                events.append(data if name == "ping" else EVENT.validate_python(data))
    return events


def kinds(events: list[Any]) -> list[str]:
    return [e["type"] if isinstance(e, dict) else e.type for e in events]


def ledger_row(stack: Stack, request_id: str) -> dict[str, Any]:
    def row() -> dict[str, Any] | None:
        with sqlite3.connect(stack.logs / "ledger.sqlite") as db:
            db.row_factory = sqlite3.Row
            found = db.execute("SELECT * FROM requests WHERE request_id = ?", (request_id,))
            hit = found.fetchone()
        return dict(hit) if hit else None

    wait_until(lambda: row() is not None, 15, f"the ledger row of {request_id}")
    return row() or {}


@pytest.mark.parametrize("model", ["tiny", "upstream"])
def test_a_vllm_backend_answers_the_sdk_as_a_message(stack: Stack, model: str) -> None:
    raw = client(stack).messages.with_raw_response.create(model=model, max_tokens=8, messages=HI)
    message = raw.parse()
    assert isinstance(message, types.Message)
    assert raw.headers["x-gateway-backend"] == model
    assert message.role == "assistant" and message.content[0].type == "text"
    assert message.stop_reason in ("end_turn", "max_tokens")
    assert 0 < message.usage.output_tokens <= 8 and message.usage.input_tokens > 0
    row = ledger_row(stack, raw.headers["x-request-id"])
    assert (row["endpoint"], row["backend"], row["status"]) == ("messages", model, 200)
    assert row["completion_tokens"] == message.usage.output_tokens
    assert row["usage_source"] == "upstream"


async def test_the_sdk_stream_helpers_get_anthropics_event_sequence(stack: Stack) -> None:
    sdk = anthropic.AsyncAnthropic(base_url=stack.root_url, api_key="unused", max_retries=0)
    texts: list[str] = []
    async with sdk.messages.stream(model="upstream", max_tokens=12, messages=HI) as stream:
        async for event in stream:
            if event.type == "text":
                texts.append(event.text)
        final = await stream.get_final_message()
    await sdk.close()
    assert "".join(texts) == final.content[0].text  # type: ignore[union-attr]
    assert final.usage.output_tokens == 12 or final.stop_reason == "end_turn"
    assert final.usage.input_tokens > 0

    events = raw_events(stack, {"model": "tiny", "max_tokens": 6, "messages": HI})
    names = kinds(events)
    assert names[:3] == ["message_start", "ping", "content_block_start"]
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(names[3:-3]) == {"content_block_delta"}
    assert all(e.delta.type == "text_delta" for e in events[3:-3])
    assert 0 < events[-2].usage.output_tokens <= 6 and events[-2].usage.input_tokens > 0


def test_an_anthropic_backend_gets_the_clients_body_untranslated(stack: Stack) -> None:
    httpx.post(f"{stack.anthropic_url}/_reset")
    sdk = client(stack)
    text = {"type": "text", "text": "Weather in Paris?", "cache_control": {"type": "ephemeral"}}
    question: Any = [{"role": "user", "content": [text]}]
    first = sdk.messages.create(
        model="claude", max_tokens=64, messages=question, tools=[WEATHER],
        tool_choice={"type": "tool", "name": "get_weather"}, metadata={"user_id": "u-1"},
    )  # fmt: skip
    assert first.stop_reason == "tool_use"
    call = first.content[0]
    assert call.type == "tool_use" and call.input == {"city": "Paris"}
    # What the stand-in received is the client's body (a field chat cannot carry included).
    received = httpx.get(f"{stack.anthropic_url}/_received").json()[-1]
    assert received["messages"] == question and received["model"] == "claude-standin"
    assert received["tool_choice"] == {"type": "tool", "name": "get_weather"}

    follow_up = [*question, {"role": "assistant", "content": first.model_dump()["content"]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call.id,
                                               "content": "Sunny, 21 C"}]}]  # fmt: skip
    with sdk.messages.stream(model="claude", max_tokens=64, messages=follow_up,
                             tools=[WEATHER]) as stream:  # fmt: skip
        answer = stream.get_final_message()
    assert answer.stop_reason == "end_turn" and answer.content[0].type == "text"

    events = raw_events(stack, {"model": "claude", "max_tokens": 64, "messages": question,
                                "tools": [WEATHER]})  # fmt: skip
    partial = [e.delta.partial_json for e in events if kinds([e]) == ["content_block_delta"]]
    assert orjson.loads("".join(partial)) == {"city": "Paris"}


def test_a_failing_anthropic_backend_falls_back_to_a_translated_one(stack: Stack) -> None:
    httpx.post(f"{stack.anthropic_url}/_reset")
    httpx.post(f"{stack.anthropic_url}/_fail", json={"status": 500, "count": 20})
    try:
        raw = client(stack).messages.with_raw_response.create(
            model="claude-then-echo", max_tokens=16, messages=HI
        )
        message = raw.parse()
    finally:
        httpx.post(f"{stack.anthropic_url}/_reset")
    assert raw.headers["x-gateway-backend"] == "echo"
    assert message.content[0].text == "Say hello."  # type: ignore[union-attr]


def test_errors_are_anthropic_shaped_with_anthropics_statuses(stack: Stack) -> None:
    with pytest.raises(anthropic.NotFoundError) as missing:
        client(stack).messages.create(model="no-such-model", max_tokens=4, messages=HI)
    assert missing.value.body["error"]["type"] == "not_found_error"  # type: ignore[index]

    def post(body: Any, **headers: str) -> httpx.Response:
        return httpx.post(f"{stack.root_url}/v1/messages", json=body, headers=headers)

    no_max = post({"model": "tiny", "messages": HI})
    assert no_max.status_code == 400
    assert no_max.json()["type"] == "error"
    assert no_max.json()["error"]["type"] == "invalid_request_error"
    assert "max_tokens" in no_max.json()["error"]["message"]
    bad_role = post(
        {"model": "tiny", "max_tokens": 4, "messages": [{"role": "system", "content": "x"}]}
    )
    assert bad_role.status_code == 400 and "messages.0.role" in bad_role.json()["error"]["message"]
    old = post(
        {"model": "tiny", "max_tokens": 4, "messages": HI}, **{"anthropic-version": "1999-01-01"}
    )
    assert old.status_code == 400 and "anthropic-version" in old.json()["error"]["message"]
    document = {
        "type": "document",
        "source": {"type": "text", "media_type": "text/plain", "data": "x"},
    }
    refused = post(
        {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": [document]}]}
    )
    assert refused.status_code == 400 and refused.json()["error"]["type"] == "invalid_request_error"
    huge = post(
        {"model": "tiny", "max_tokens": 4, "messages": [{"role": "user", "content": "x" * 70000}]}
    )
    assert huge.status_code == 413 and huge.json()["error"]["type"] == "request_too_large"


def test_experiments_and_routing_hints_work_as_on_chat(stack: Stack) -> None:
    sdk = client(stack)
    raw = sdk.messages.with_raw_response.create(model="ab-route", max_tokens=8, messages=HI)
    assert raw.headers["x-gateway-experiment"].split("/")[0] == "ab"
    for task, backend in (("code", "coder"), ("chat", "echo")):
        raw = sdk.messages.with_raw_response.create(
            model="by-task", max_tokens=8, messages=HI, extra_body={"routing": {"task": task}}
        )
        assert raw.headers["x-gateway-backend"] == backend


def test_count_tokens_is_the_routers_count_for_the_chosen_backend(stack: Stack) -> None:
    sdk = client(stack)
    counted = sdk.messages.count_tokens(model="tiny", messages=HI).input_tokens
    used = sdk.messages.create(model="tiny", max_tokens=2, messages=HI).usage.input_tokens
    assert 0 < counted <= used  # the chat template adds a few tokens around the text
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(model="no-such-model", messages=HI)
