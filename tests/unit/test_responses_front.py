"""OpenAI's Responses API over chat: requests become chat bodies the gateway accepts, chat
answers become `Response`s and typed events the `openai` SDK's own models accept, and stored
responses are found only by the key that made them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from gateway.core.protocol import parse_body
from gateway.errors import OpenAIError
from gateway.fronts.responses.stream import ResponsesStream
from gateway.fronts.responses.translate import to_chat_body, to_response
from llmops import ResponseStore
from tests.helpers import TOOL_CALL_STREAM

EVENT: TypeAdapter[Any] = TypeAdapter(ResponseStreamEvent)
WEATHER = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def test_string_input_and_instructions() -> None:
    chat = to_chat_body({"model": "auto", "input": "Hi", "instructions": "Be brief.",
                         "max_output_tokens": 20, "temperature": 0.5}, [])  # fmt: skip
    assert chat["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]
    assert (chat["max_tokens"], chat["temperature"]) == (20, 0.5)


def test_items_with_images_tool_calls_and_outputs_continue_a_history() -> None:
    history = [
        {"type": "message", "role": "user", "content": "Weather in Paris?"},
        {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
         "arguments": '{"city":"Paris"}', "status": "completed"},
    ]  # fmt: skip
    body = {
        "model": "auto",
        "input": [
            {"type": "function_call_output", "call_id": "call_1", "output": "Sunny"},
            {"role": "user", "content": [
                {"type": "input_text", "text": "And this place?"},
                {"type": "input_image", "image_url": "data:image/png;base64,iVBO"}]},
        ],
        "tools": [WEATHER],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "text": {"format": {"type": "json_schema", "name": "w", "schema": {"type": "object"}}},
        "stream": True,
    }  # fmt: skip
    chat = to_chat_body(body, history)
    assert parse_body(chat, "chat/completions") is chat  # the gateway's own OpenAI checks
    roles = [m["role"] for m in chat["messages"]]
    assert roles == ["user", "assistant", "tool", "user"]
    assert chat["messages"][1]["tool_calls"][0]["id"] == "call_1"
    assert chat["messages"][2] == {"role": "tool", "tool_call_id": "call_1", "content": "Sunny"}
    assert chat["messages"][3]["content"][1]["image_url"]["url"].startswith("data:image/png")
    assert chat["tools"][0]["function"]["name"] == "get_weather"
    assert chat["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert chat["response_format"]["json_schema"]["name"] == "w"
    assert chat["stream_options"] == {"include_usage": True}


@pytest.mark.parametrize(
    "body",
    [
        {"model": "m", "input": [{"type": "web_search_call", "id": "x"}]},
        {"model": "m", "input": "x", "tools": [{"type": "web_search"}]},
        {"model": "m", "input": [{"role": "user", "content": [{"type": "input_file"}]}]},
    ],
)
def test_what_chat_cannot_carry_is_a_400(body: dict[str, Any]) -> None:
    with pytest.raises(OpenAIError) as raised:
        to_chat_body(body, [])
    assert raised.value.status == 400 and raised.value.code == "unsupported_parameter"


def completion(finish: str, **message: Any) -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "model": "tiny",
        "choices": [{"index": 0, "message": {"role": "assistant", **message},
                     "finish_reason": finish}],
        "usage": {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }  # fmt: skip


def test_a_completion_is_a_response_the_sdk_accepts() -> None:
    call = {"id": "call_9", "type": "function",
            "function": {"name": "get_weather", "arguments": '{"city": "Rome"}'}}  # fmt: skip
    body = {"model": "auto", "input": "x", "tools": [WEATHER], "metadata": {"k": "v"}}
    raw = to_response(
        body, "resp_1", completion("tool_calls", content="Looking.", tool_calls=[call])
    )
    response = Response.model_validate(raw)
    assert response.status == "completed" and response.output_text == "Looking."
    assert [item.type for item in response.output] == ["message", "function_call"]
    assert response.output[1].call_id == "call_9"  # type: ignore[union-attr]
    assert response.usage is not None and response.usage.total_tokens == 17
    assert response.metadata == {"k": "v"} and response.tools[0].name == "get_weather"  # type: ignore[union-attr]

    cut = Response.model_validate(to_response(body, "resp_2", completion("length", content="a")))
    assert cut.status == "incomplete" and cut.incomplete_details is not None
    assert cut.incomplete_details.reason == "max_output_tokens"


def test_a_stream_is_the_typed_event_sequence_numbered_in_any_chunking() -> None:
    upstream = TOOL_CALL_STREAM
    for size in (5, 80, len(upstream)):
        translator = ResponsesStream({"model": "auto", "input": "x"}, "resp_1")
        out = b"".join(
            translator.feed(upstream[i : i + size]) for i in range(0, len(upstream), size)
        )
        out += translator.close()
        events = []
        for raw in out.split(b"\n\n")[:-1]:
            name, data = raw.split(b"\n")
            event = EVENT.validate_python(orjson.loads(data.removeprefix(b"data: ")))
            assert name == b"event: " + event.type.encode()
            events.append(event)
        assert [e.sequence_number for e in events] == list(range(len(events)))
        kinds = [e.type for e in events]
        assert kinds[:2] == ["response.created", "response.in_progress"]
        assert kinds[-1] == "response.completed"
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        assert text == "Let me look."
        done = next(e for e in events if e.type == "response.function_call_arguments.done")
        assert done.arguments == '{"city": "Rome"}' and done.name == "get_weather"
        final = events[-1].response
        assert final.output_text == "Let me look." and final.usage.input_tokens == 9
        assert [item.type for item in final.output] == ["message", "function_call"]


def test_a_broken_stream_ends_failed() -> None:
    translator = ResponsesStream({"model": "auto", "input": "x"}, "resp_1")
    broken = b'data: {"id":"c","choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n'
    broken += b'data: {"error": {"message": "upstream went away"}}\n\ndata: [DONE]\n\n'
    out = translator.feed(broken) + translator.close()
    last = EVENT.validate_python(orjson.loads(out.split(b"\n\n")[-2].split(b"\n")[1][6:]))
    assert last.type == "response.failed" and last.response.error.message == "upstream went away"


def test_stored_responses_belong_to_their_key_and_expire(tmp_path: Path) -> None:
    store = ResponseStore(tmp_path / "ledger.sqlite", retention_s=3600)
    response = {"id": "resp_a", "output": []}
    store.save(response, [{"role": "user", "content": "hi"}], owner="key-1")
    assert store.get("resp_a", "key-1") == (response, [{"role": "user", "content": "hi"}])
    assert store.get("resp_a", "key-2") is None and store.get("resp_a", None) is None
    assert not store.delete("resp_a", "key-2")
    assert store.delete("resp_a", "key-1") and store.get("resp_a", "key-1") is None
    store.save({"id": "resp_b", "output": []}, [], owner=None)
    store.retention_s = 0.01
    time.sleep(0.02)
    assert store.get("resp_b", None) is None  # past the retention: gone


def test_a_passed_through_stream_is_accounted_and_its_final_response_found() -> None:
    from gateway.fronts.responses.front import _final_response
    from gateway.fronts.responses.wire import ResponsesWire

    usage = {"input_tokens": 11, "input_tokens_details": {"cached_tokens": 3},
             "output_tokens": 4, "output_tokens_details": {"reasoning_tokens": 0},
             "total_tokens": 15}  # fmt: skip
    created = {"type": "response.created", "response": {"id": "resp_1", "usage": None}}
    delta = {"type": "response.output_text.delta", "delta": "Hi", "item_id": "m",
             "output_index": 0, "content_index": 0, "sequence_number": 1}  # fmt: skip
    done = {"type": "response.completed", "response": {"id": "resp_1", "usage": usage}}
    events = b"".join(
        b"event: " + str(e["type"]).encode() + b"\ndata: " + orjson.dumps(e) + b"\n\n"
        for e in (created, delta, done)
    )
    wire = ResponsesWire()
    found, kept = wire.usage(events)
    assert kept == events  # passed on untouched
    assert found is not None and found["prompt_tokens_details"] == {"cached_tokens": 3}
    assert {k: found[k] for k in ("prompt_tokens", "completion_tokens", "total_tokens")} == {
        "prompt_tokens": 11, "completion_tokens": 4, "total_tokens": 15
    }  # fmt: skip
    assert wire.tokens(events) == 1
    assert _final_response(events) == done["response"]
    assert _final_response(events.split(b"event: response.completed")[0]) is None


def test_the_text_of_a_passed_through_response_reaches_the_request_log() -> None:
    from llmops import response_text

    body = {"model": "auto", "input": "x"}
    response = to_response(body, "resp_1", completion("stop", content="Sunny."))
    assert response_text(response) == "Sunny."
