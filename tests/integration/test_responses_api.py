"""`POST /v1/responses` on the running stack, driven by the official `openai` SDK: served by a
vLLM engine and by vLLM's OpenAI server through chat, streamed with the SDK's helper, tools
through the Anthropic stand-in, and conversations continued from the gateway's own store."""

from __future__ import annotations

import sqlite3
from typing import Any

import openai
import orjson
import pytest
from openai.types.responses import Response

from tests.helpers import wait_until
from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration
WEATHER: Any = {
    "type": "function",
    "name": "get_weather",
    "description": "Weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
}


def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)


def logged_body(stack: Stack, request_id: str) -> dict[str, Any]:
    """The chat body the gateway served for a request, from the request log."""

    def find() -> dict[str, Any] | None:
        # Whole lines only: the gateway may be writing the last one right now.
        for line in (stack.logs / "requests.jsonl").read_text().split("\n")[:-1]:
            entry = orjson.loads(line)
            if entry.get("request_id") == request_id:
                return dict(entry)
        return None

    wait_until(lambda: find() is not None, 15, f"the request log line of {request_id}")
    return (find() or {})["request"]  # type: ignore[no-any-return]


@pytest.mark.parametrize("model", ["tiny", "upstream"])  # through chat; passed through
def test_a_vllm_backend_answers_the_sdk_with_a_response(stack: Stack, model: str) -> None:
    raw = client(stack).responses.with_raw_response.create(
        model=model, input="Say hello.", instructions="Be brief.", max_output_tokens=16
    )
    response = raw.parse()
    assert isinstance(response, Response) and raw.headers["x-gateway-backend"] == model
    assert response.status in ("completed", "incomplete") and response.output_text
    assert response.usage is not None and 0 < response.usage.output_tokens <= 16
    with sqlite3.connect(stack.logs / "ledger.sqlite") as db:
        wait_until(
            lambda: db.execute(
                "SELECT endpoint FROM requests WHERE request_id = ?", (raw.headers["x-request-id"],)
            ).fetchone() == ("responses",),
            15, "the ledger row",
        )  # fmt: skip


def test_streams_are_the_typed_events_and_the_sdk_helper_takes_them(stack: Stack) -> None:
    sdk = client(stack)
    # The tiny model rarely stops by itself: its stream ends `response.incomplete`.
    with sdk.responses.create(
        model="upstream", input="Hi", max_output_tokens=12, stream=True
    ) as events:
        seen = list(events)
    kinds = [event.type for event in seen]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] in ("response.completed", "response.incomplete")
    assert [event.sequence_number for event in seen] == list(range(len(seen)))
    final = seen[-1].response  # type: ignore[union-attr]
    deltas = [e.delta for e in seen if e.type == "response.output_text.delta"]  # type: ignore[union-attr]
    assert "".join(deltas) == final.output_text and final.usage.output_tokens > 0

    texts: list[str] = []
    with sdk.responses.stream(model="echo", input="one two three") as stream:
        for event in stream:
            if event.type == "response.output_text.delta":
                texts.append(event.delta)
        answer = stream.get_final_response()
    assert "".join(texts) == answer.output_text == "one two three"
    assert answer.status == "completed" and answer.usage is not None


def test_a_conversation_continues_from_the_store(stack: Stack) -> None:
    sdk = client(stack)
    first = sdk.responses.create(model="echo", input="the first turn")
    assert first.output_text == "the first turn"
    raw = sdk.responses.with_raw_response.create(
        model="echo", input="the second turn", previous_response_id=first.id
    )
    second = raw.parse()
    assert second.previous_response_id == first.id and second.output_text == "the second turn"
    # The backend was sent the whole conversation: the first turn and its answer, then this.
    messages = logged_body(stack, raw.headers["x-request-id"])["messages"]
    turns = [(m["role"], m["content"]) for m in messages]
    first_turn = [("user", "the first turn"), ("assistant", "the first turn")]
    assert turns == [*first_turn, ("user", "the second turn")]

    assert sdk.responses.retrieve(first.id).output_text == "the first turn"
    assert sdk.responses.delete(first.id) is None
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(first.id)
    with pytest.raises(openai.NotFoundError) as gone:
        sdk.responses.create(model="echo", input="x", previous_response_id=first.id)
    assert gone.value.param == "previous_response_id"
    unstored = sdk.responses.create(model="echo", input="forget me", store=False)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.retrieve(unstored.id)


def test_a_function_call_round_trip(stack: Stack) -> None:
    """Through the Anthropic stand-in, which calls the tool it is offered."""
    sdk = client(stack)
    asked = sdk.responses.create(model="claude", input="Weather in Paris?", tools=[WEATHER])
    call = asked.output[-1]
    assert call.type == "function_call" and orjson.loads(call.arguments) == {"city": "Paris"}
    answered = sdk.responses.create(
        model="claude", previous_response_id=asked.id, tools=[WEATHER],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": "Sunny"}],
    )  # fmt: skip
    assert answered.status == "completed" and answered.output[0].type == "message"


def test_bad_requests_are_openai_errors(stack: Stack) -> None:
    sdk = client(stack)
    with pytest.raises(openai.NotFoundError):
        sdk.responses.create(model="no-such-model", input="x")
    with pytest.raises(openai.BadRequestError) as no_input:
        sdk.responses.create(model="echo")
    assert no_input.value.param == "input"
    with pytest.raises(openai.BadRequestError) as tool:
        sdk.responses.create(model="echo", input="x", tools=[{"type": "web_search"}])
    assert tool.value.code == "unsupported_parameter"
    with pytest.raises(openai.BadRequestError):
        sdk.responses.create(model="echo", input="x", temperature=3)


def test_routing_hints_work_as_on_chat(stack: Stack) -> None:
    for task, backend in (("code", "coder"), ("chat", "echo")):
        raw = client(stack).responses.with_raw_response.create(
            model="by-task", input="hi", extra_body={"routing": {"task": task}}
        )
        assert raw.headers["x-gateway-backend"] == backend


def test_a_backend_that_speaks_responses_gets_them_passed_through(stack: Stack) -> None:
    """`upstream` is vLLM's OpenAI server (`responses_api: true`): it answers /v1/responses
    itself, statelessly; the conversation's state is the gateway's."""
    sdk = client(stack)
    first = sdk.responses.create(model="upstream", input="Say hi.", max_output_tokens=8)
    log = lambda: (stack.logs / "upstream.log").read_text(errors="replace")  # noqa: E731
    assert f"Received request {first.id}" in log()  # vLLM's own response id: it made it
    raw = sdk.responses.with_raw_response.create(
        model="upstream", input="Again.", previous_response_id=first.id, max_output_tokens=8
    )
    second = raw.parse()
    assert f"Received request {second.id}" in log()
    assert second.previous_response_id == first.id and second.store is True
    assert sdk.responses.retrieve(second.id).output_text == second.output_text
    # The upstream was sent the whole conversation: more prompt than the turn alone.
    alone = sdk.responses.create(model="upstream", input="Again.", max_output_tokens=8, store=False)
    assert second.usage is not None and alone.usage is not None
    assert second.usage.input_tokens > alone.usage.input_tokens + 4  # a user and an assistant turn

    with sdk.responses.create(
        model="upstream",
        input="Hi",
        max_output_tokens=8,
        stream=True,
        previous_response_id=second.id,
    ) as events:
        seen = list(events)
    final = seen[-1].response  # type: ignore[union-attr]
    assert seen[-1].type in ("response.completed", "response.incomplete")
    assert f"Received request {final.id}" in log()
    stored = sdk.responses.retrieve(final.id)
    assert stored.previous_response_id == second.id and stored.output_text == final.output_text
    with sqlite3.connect(stack.logs / "ledger.sqlite") as db:
        wait_until(
            lambda: db.execute(
                "SELECT endpoint, backend, completion_tokens FROM requests WHERE request_id = ?",
                (raw.headers["x-request-id"],),
            ).fetchone() == ("responses", "upstream", second.usage.output_tokens),  # type: ignore[union-attr]
            15, "the ledger row",
        )  # fmt: skip
