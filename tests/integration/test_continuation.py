"""Streams whose backend breaks after output reached the client, continued on the route's next
backend, through real Serve with the official clients: fakes that break after 1, 6 and 11
tokens continued by a fake that knows the whole answer (so the client's text must be exactly
it), by the vLLM engine (a prefill: `continue_final_message`) and by vLLM's own server
(the continuation prompt); chat, completions, Anthropic's Messages and OpenAI's Responses."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import orjson
import pytest

from gateway.core.continuation import FIELD
from tests.integration.conftest import BREAKS_AT, RESUMED, Stack
from tests.integration.test_messages_api import ledger_row

pytestmark = pytest.mark.integration
ASK = [{"role": "user", "content": "Tell me about the fox."}]


def chat_stream(stack: Stack, route: str, **extra: Any) -> tuple[list[Any], str]:
    """The official client's chunks of a streamed chat completion, and the request id."""
    raw = stack.client().chat.completions.with_raw_response.create(
        model=route, messages=ASK, stream=True, stream_options={"include_usage": True}, **extra
    )  # fmt: skip
    return list(raw.parse()), raw.headers["x-request-id"]


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


@pytest.mark.parametrize("breaks_at", BREAKS_AT)
def test_a_broken_chat_stream_is_the_whole_answer_once(stack: Stack, breaks_at: int) -> None:
    chunks, request_id = chat_stream(stack, f"resume-{breaks_at}")
    assert text_of(chunks) == RESUMED
    assert len({c.id for c in chunks}) == 1
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.role) == 1
    (finish,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    hand_over = getattr(finish, FIELD)
    assert [(h["from"], h["to"], h["after_tokens"]) for h in hand_over] == [
        (f"snap-{breaks_at}", "whole", breaks_at)]  # fmt: skip
    usage = chunks[-1].usage
    assert usage.completion_tokens == len(RESUMED.split())
    row = ledger_row(stack, request_id)
    assert (row["status"], row["backend"], row["continued_from"]) == (
        200,
        "whole",
        f"snap-{breaks_at}",
    )
    assert row["completion_tokens"] == usage.completion_tokens
    assert row["prompt_tokens"] == usage.prompt_tokens
    assert row["cost_usd"] == pytest.approx(breaks_at / 1e6)  # `whole` is free, `snap` is not


def test_with_resuming_off_the_stream_ends_with_an_error_event(stack: Stack) -> None:
    body = {"model": "resume-off", "messages": ASK, "stream": True}
    with httpx.stream("POST", f"{stack.base_url}/chat/completions", json=body, timeout=30) as r:
        raw = b"".join(r.iter_bytes())
    assert b"upstream_stream_broken" in raw and FIELD.encode() not in raw


def test_a_completion_stream_is_continued(stack: Stack) -> None:
    stream = stack.client().completions.create(
        model="resume-6", prompt="Tell me about the fox:", stream=True, max_tokens=40
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == RESUMED


def test_the_messages_api_streams_one_message(stack: Stack) -> None:
    sdk = anthropic.Anthropic(base_url=stack.root_url, api_key="unused", max_retries=0)
    texts: list[str] = []
    with sdk.messages.stream(model="resume-6", max_tokens=64, messages=ASK) as stream:  # type: ignore[arg-type]
        for event in stream:
            if event.type == "text":
                texts.append(event.text)
        final = stream.get_final_message()
    assert "".join(texts) == RESUMED == final.content[0].text  # type: ignore[union-attr]
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens == len(RESUMED.split())


def test_the_responses_api_streams_one_response(stack: Stack) -> None:
    with stack.client().responses.stream(model="resume-11", input="Tell me about the fox.") as s:
        deltas = [e.delta for e in s if e.type == "response.output_text.delta"]
        answer = s.get_final_response()
    assert "".join(deltas) == answer.output_text == RESUMED
    assert answer.status == "completed"


ENGINES = [("resume-tiny", "tiny", "prefill"), ("resume-upstream", "upstream", "prompt")]


@pytest.mark.parametrize(("route", "to", "mode"), ENGINES)
def test_a_real_engine_continues_from_the_text_sent(
    stack: Stack, route: str, to: str, mode: str
) -> None:
    chunks, request_id = chat_stream(stack, route, max_tokens=16, temperature=0)
    sent = " ".join(RESUMED.split()[:6])
    text = text_of(chunks)
    assert text.startswith(sent) and len(text) > len(sent)
    (finish,) = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    (hand_over,) = getattr(finish, FIELD)
    assert (hand_over["to"], hand_over["mode"]) == (to, mode)
    assert len({c.id for c in chunks}) == 1
    usage = chunks[-1].usage
    row = ledger_row(stack, request_id)
    assert (row["status"], row["backend"], row["continued_from"]) == (200, to, "snap-6")
    # The engine's own usage plus the 6 tokens `snap-6` sent; at most the 16 asked for.
    assert 6 < usage.completion_tokens == row["completion_tokens"] <= 16
    assert row["usage_source"] == "upstream"
    assert orjson.dumps(hand_over)  # plain JSON for any client
