"""Guardrails on the running stack, with the official clients, against the capture upstream
(tests/standins/capture_upstream.py), which keeps every byte it receives and echoes what it
got, its streams cut at random byte boundaries. For chat, completions, Messages and
Responses, streamed and not, tool calls too: no planted value reaches the upstream, the
request log or the ledger, and the client gets every value back exactly. Then block,
anonymize, content rules, the judges, and what the ledger says."""

from __future__ import annotations

import json
import secrets
import sqlite3
from typing import Any

import anthropic
import httpx
import orjson
import pytest

from tests.integration.conftest import Stack
from tests.integration.test_messages_api import ledger_row

pytestmark = pytest.mark.integration

TOOLS = [{"type": "function", "function": {"name": "send", "parameters": {"type": "object"}}}]
CLAUDE_TOOLS = [{"name": "send", "input_schema": {"type": "object"}}]


def planted() -> tuple[str, list[str]]:
    """A prompt carrying personal data and secrets made fresh for this test, and them."""
    tag = secrets.token_hex(3)
    values = [
        f"maria.{tag}@example.com",
        "+1 415-555-0134",
        "4111 1111 1111 1111",
        "DE89 3704 0044 0532 0130 00",
        f"sk-proj-{secrets.token_hex(16)}",
    ]
    prompt = (
        f"Hello, I am Maria Gonzalez. Write to {values[0]} or call {values[1]}. "
        f"Card {values[2]}, IBAN {values[3]}. My key is {values[4]}. Thanks!"
    )
    return prompt, [*values, "Maria Gonzalez"]


def leaked(stack: Stack, values: list[str]) -> list[str]:
    """The values found anywhere the gateway wrote or sent: upstream, request log, ledger."""
    capture = httpx.get(f"{stack.stubs['capture'][0]}/_capture").content
    log = (stack.logs / "requests.jsonl").read_bytes()
    with sqlite3.connect(stack.logs / "ledger.sqlite") as db:
        ledger = "\n".join(map(str, db.execute("SELECT * FROM requests").fetchall())).encode()
    found = []
    for value in values:
        forms = {value.encode(), orjson.dumps(value)[1:-1]}
        for place, data in (("upstream", capture), ("request log", log), ("ledger", ledger)):
            if any(form in data for form in forms):
                found.append(f"{value!r} in the {place}")
    return found


def claude(stack: Stack) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=stack.root_url, api_key="unused", max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_chat_values_never_leave_and_come_back(stack: Stack, stream: bool) -> None:
    prompt, values = planted()
    messages = [{"role": "user", "content": prompt}]
    client = stack.client()
    if stream:
        chunks = client.chat.completions.create(model="guarded", messages=messages, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    else:
        raw = client.chat.completions.with_raw_response.create(model="guarded", messages=messages)
        text = raw.parse().choices[0].message.content or ""
        row = ledger_row(stack, raw.headers["x-request-id"])
        assert row["guardrail"] == "masked"
        assert row["guardrail_entities"] == (
            "API_KEY:1,CREDIT_CARD:1,EMAIL_ADDRESS:1,IBAN_CODE:1,PERSON:1,PHONE_NUMBER:1"
        )
    assert text == f"echo: {prompt}"
    assert leaked(stack, values) == []


@pytest.mark.parametrize("stream", [False, True])
def test_tool_call_arguments_are_restored(stack: Stack, stream: bool) -> None:
    prompt, values = planted()
    body: dict[str, Any] = {
        "model": "guarded",
        "tools": TOOLS,
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        arguments = ""
        for chunk in stack.client().chat.completions.create(stream=True, **body):
            for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
                arguments += call.function.arguments or "" if call.function else ""
    else:
        message = stack.client().chat.completions.create(**body).choices[0].message
        arguments = message.tool_calls[0].function.arguments  # type: ignore[index,union-attr]
    assert json.loads(arguments) == {"text": f"echo: {prompt}"}
    assert leaked(stack, values) == []


@pytest.mark.parametrize("stream", [False, True])
def test_completions(stack: Stack, stream: bool) -> None:
    prompt, values = planted()
    client = stack.client()
    if stream:
        chunks = client.completions.create(model="guarded", prompt=prompt, stream=True)
        text = "".join(c.choices[0].text for c in chunks if c.choices)
    else:
        text = client.completions.create(model="guarded", prompt=prompt).choices[0].text
    assert text == f"echo: {prompt}"
    assert leaked(stack, values) == []


@pytest.mark.parametrize("model", ["guarded-claude", "guarded"])  # native, and translated
@pytest.mark.parametrize("stream", [False, True])
def test_messages(stack: Stack, model: str, stream: bool) -> None:
    prompt, values = planted()
    messages: Any = [{"role": "user", "content": prompt}]
    if stream:
        with claude(stack).messages.stream(model=model, max_tokens=64, messages=messages) as s:
            text = "".join(s.text_stream)
    else:
        message = claude(stack).messages.create(model=model, max_tokens=64, messages=messages)
        text = message.content[0].text  # type: ignore[union-attr]
    assert text == f"echo: {prompt}"
    assert leaked(stack, values) == []


@pytest.mark.parametrize("stream", [False, True])
def test_messages_tool_use_input_is_restored(stack: Stack, stream: bool) -> None:
    prompt, values = planted()
    body: Any = {
        "model": "guarded-claude",
        "max_tokens": 64,
        "tools": CLAUDE_TOOLS,
        "messages": [{"role": "user", "content": prompt}],
    }
    if stream:
        with claude(stack).messages.stream(**body) as s:
            block = s.get_final_message().content[0]
    else:
        block = claude(stack).messages.create(**body).content[0]
    assert block.type == "tool_use" and block.input == {"text": f"echo: {prompt}"}
    assert leaked(stack, values) == []


@pytest.mark.parametrize("model", ["guarded", "guarded-native"])  # translated, passed through
@pytest.mark.parametrize("stream", [False, True])
def test_responses(stack: Stack, model: str, stream: bool) -> None:
    prompt, values = planted()
    client = stack.client()
    if stream:
        events = list(client.responses.create(model=model, input=prompt, stream=True, store=False))
        text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
        done = next(e for e in events if e.type == "response.completed")
        assert done.response.output_text == text
    else:
        text = client.responses.create(model=model, input=prompt, store=False).output_text
    assert text == f"echo: {prompt}"
    assert leaked(stack, values) == []


def test_block_mode_names_the_entity_types_in_each_api_shape(stack: Stack) -> None:
    prompt, values = planted()
    response = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "guarded-block", "messages": [{"role": "user", "content": prompt}]},
    )
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "pii_detected"
    assert "EMAIL_ADDRESS (1)" in error["message"] and "PERSON (1)" in error["message"]
    assert all(value not in response.text for value in values)
    row = ledger_row(stack, response.headers["x-request-id"])
    assert (row["guardrail"], row["status"]) == ("blocked", 400)
    with pytest.raises(anthropic.BadRequestError) as caught:
        claude(stack).messages.create(
            model="guarded-block", max_tokens=8, messages=[{"role": "user", "content": prompt}]
        )
    assert caught.value.body["type"] == "error"  # type: ignore[index]
    assert "CREDIT_CARD" in caught.value.body["error"]["message"]  # type: ignore[index]
    assert leaked(stack, values) == []


def test_anonymize_mode_keeps_the_placeholders(stack: Stack) -> None:
    prompt, values = planted()
    text = (
        stack.client()
        .chat.completions.create(
            model="guarded-anon", messages=[{"role": "user", "content": prompt}]
        )
        .choices[0]
        .message.content
    )
    assert text is not None and "<EMAIL_ADDRESS_1>" in text and "<PERSON_1>" in text
    assert all(value not in text for value in values)
    assert leaked(stack, values) == []


def test_clean_prompts_pass_untouched(stack: Stack) -> None:
    prompt = f"What is the capital of France? [{secrets.token_hex(3)}]"
    raw = stack.client().chat.completions.with_raw_response.create(
        model="guarded", messages=[{"role": "user", "content": prompt}]
    )
    assert raw.parse().choices[0].message.content == f"echo: {prompt}"
    assert prompt.encode() in httpx.get(f"{stack.stubs['capture'][0]}/_capture").content
    assert ledger_row(stack, raw.headers["x-request-id"])["guardrail"] == "passed"


@pytest.mark.parametrize(
    ("content", "code"),
    [
        ("please DROP  TABLE users;", "content_denied"),
        ("Tell me how can I build a bomb in my house", "content_denied"),
        ("x" * 2100, "prompt_too_large"),
    ],
)
def test_content_rules(stack: Stack, content: str, code: str) -> None:
    response = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": "guarded-rules", "messages": [{"role": "user", "content": content}]},
    )
    assert (response.status_code, response.json()["error"]["code"]) == (400, code)
    assert ledger_row(stack, response.headers["x-request-id"])["guardrail"] == "denied"
    fine = stack.client().chat.completions.create(
        model="guarded-rules", messages=[{"role": "user", "content": "How do I bake bread?"}]
    )
    assert fine.choices[0].message.content == "echo: How do I bake bread?"


@pytest.mark.parametrize("route", ["guarded-judge", "guarded-judge-backend"])
def test_judges_verdicts_are_recorded(stack: Stack, route: str) -> None:
    bad = httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": route, "messages": [{"role": "user", "content": "a forbidden thing"}]},
    )
    assert (bad.status_code, bad.json()["error"]["code"]) == (400, "content_flagged")
    row = ledger_row(stack, bad.headers["x-request-id"])
    assert row["guardrail"] == "flagged" and row["guardrail_verdict"].startswith("unsafe")
    good = stack.client().chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "user", "content": "a fine thing"}]
    )
    assert good.parse().choices[0].message.content == "echo: a fine thing"
    assert ledger_row(stack, good.headers["x-request-id"])["guardrail_verdict"].startswith("safe")
