"""Guardrails without a server: placeholders, masking request bodies of each API, restoring
answers whole and streamed (placeholders and events split at every byte boundary), policies
combined from where they are attached, rules, the judge, failing closed."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from guardrails import (
    Finding,
    Guard,
    GuardrailsConfig,
    PresidioDetector,
    Refusal,
    StreamRestorer,
    Vault,
    map_all,
    map_request,
    texts,
)

EMAIL, CARD = "ana.lima@example.org", "4111 1111 1111 1111"


class Planted:
    """A detector that finds the listed values (tests the plumbing, not detection)."""

    def __init__(self, values: dict[str, str], fail: bool = False) -> None:
        self.values, self.fail = values, fail

    def find(self, text: str, entities: frozenset[str], threshold: float) -> list[Finding]:
        if self.fail:
            raise RuntimeError("detector down")
        found = []
        for value, entity in self.values.items():
            at = text.find(value)
            while at >= 0 and entity in entities:
                found.append(Finding(at, at + len(value), entity, 1.0))
                at = text.find(value, at + 1)
        return sorted(found, key=lambda f: f.start)


def vault_with(*pairs: tuple[str, str]) -> tuple[Vault, list[str]]:
    vault = Vault()
    return vault, [vault.placeholder(entity, value) for entity, value in pairs]


def test_the_same_value_gets_the_same_placeholder_and_comes_back() -> None:
    vault = Vault()
    text = f"{EMAIL} and {CARD}, again {EMAIL}"
    findings = Planted({EMAIL: "EMAIL_ADDRESS", CARD: "CREDIT_CARD"}).find(
        text, frozenset({"EMAIL_ADDRESS", "CREDIT_CARD"}), 0.5
    )
    masked = vault.mask(text, findings)
    assert masked == "<EMAIL_ADDRESS_1> and <CREDIT_CARD_1>, again <EMAIL_ADDRESS_1>"
    assert vault.restore(masked) == text
    assert vault.counts() == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 2}
    assert vault.restore("<EMAIL_ADDRESS_9> <NOT_OURS_1>") == "<EMAIL_ADDRESS_9> <NOT_OURS_1>"


def test_escaped_restore_keeps_json_valid() -> None:
    vault, (key,) = vault_with(("PRIVATE_KEY", 'a "quoted"\nkey'))
    arguments = json.dumps({"key": key})
    assert json.loads(vault.restore(arguments, escaped=True)) == {"key": 'a "quoted"\nkey'}


def test_request_texts_of_every_api_are_found_and_structure_left_alone() -> None:
    bodies = [
        {
            "model": "m",
            "messages": [
                {"role": "user", "name": "x", "content": [{"type": "text", "text": "chat"}]},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {
                            "id": "c1",
                            "type": "function",
                            "function": {"name": "f", "arguments": "args"},
                        }
                    ],
                },
            ],
        },
        {"prompt": ["p1", "p2"]},
        {
            "system": [{"type": "text", "text": "sys"}],
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": "t", "content": "result"},
                        {"type": "tool_use", "id": "t2", "name": "n", "input": {"to": "leaf"}},
                    ],
                }
            ],
        },
        {
            "instructions": "ins",
            "input": [{"type": "function_call_output", "call_id": "c", "output": "out"}],
        },
    ]
    assert [texts(b) for b in bodies] == [
        ["chat", "args"],
        ["p1", "p2"],
        ["sys", "result", "leaf"],
        ["ins", "out"],
    ]
    upper = map_request(bodies[2], lambda text, escaped: text.upper())
    assert upper["messages"][0]["content"][1] == {
        "type": "tool_use",
        "id": "t2",
        "name": "n",
        "input": {"to": "LEAF"},
    }
    assert bodies[2]["system"][0]["text"] == "sys"  # the original is not changed


def _chat_events(text: str, tool_args: str | None = None) -> bytes:
    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        payload = {
            "object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + orjson.dumps(payload) + b"\n\n"

    out = [chunk({"role": "assistant"})]
    out += [chunk({"content": text[i : i + 2]}) for i in range(0, len(text), 2)]
    if tool_args is not None:
        out.append(
            chunk(
                {
                    "tool_calls": [
                        {
                            "index": 0,
                            "id": "c",
                            "type": "function",
                            "function": {"name": "f", "arguments": ""},
                        }
                    ]
                }
            )
        )
        out += [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": tool_args[i : i + 3]}}]})
            for i in range(0, len(tool_args), 3)
        ]
    return b"".join([*out, chunk({}, "stop"), b"data: [DONE]\n\n"])


def _messages_events(text: str) -> bytes:
    def event(name: str, payload: dict[str, Any]) -> bytes:
        return f"event: {name}\ndata: ".encode() + orjson.dumps({"type": name, **payload}) + b"\n\n"

    out = [
        event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    ]
    out += [
        event(
            "content_block_delta",
            {"index": 0, "delta": {"type": "text_delta", "text": text[i : i + 4]}},
        )
        for i in range(0, len(text), 4)
    ]
    out += [event("content_block_stop", {"index": 0}), event("message_stop", {})]
    return b"".join(out)


def _replay(restorer: StreamRestorer, data: bytes, cuts: list[int]) -> list[dict[str, Any]]:
    out, at = b"", 0
    for cut in sorted(set(cuts)):
        out += restorer.feed(data[at:cut])
        at = cut
    out += restorer.feed(data[at:]) + restorer.close()
    events = [e for e in out.split(b"\n\n") if e]
    return [orjson.loads(e.split(b"data: ", 1)[1]) for e in events if b"[DONE]" not in e]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_streamed_chat_text_and_tool_arguments_come_back_whole(cuts: list[int]) -> None:
    vault, (email, card) = vault_with(("EMAIL_ADDRESS", EMAIL), ("CREDIT_CARD", CARD))
    args = json.dumps({"to": email, "card": card})
    data = _chat_events(f"mail {email} pay {card}<", args)
    events = _replay(StreamRestorer(vault), data, [c % len(data) for c in cuts])
    deltas = [e["choices"][0]["delta"] for e in events if e["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == f"mail {EMAIL} pay {CARD}<"
    sent = "".join(c["function"]["arguments"] for d in deltas for c in d.get("tool_calls") or [])
    assert json.loads(sent) == {"to": EMAIL, "card": CARD}
    assert events[-1]["choices"][0]["finish_reason"] == "stop"  # held text went out before it


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2000), max_size=12))
def test_streamed_messages_text_comes_back_before_the_block_stops(cuts: list[int]) -> None:
    vault, (email,) = vault_with(("EMAIL_ADDRESS", EMAIL))
    data = _messages_events(f"to {email}")
    events = _replay(StreamRestorer(vault), data, [c % len(data) for c in cuts])
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == f"to {EMAIL}"
    assert [e["type"] for e in events][-2:] == ["content_block_stop", "message_stop"]


def test_whole_answers_are_restored_everywhere_but_structure() -> None:
    vault, (email,) = vault_with(("EMAIL_ADDRESS", EMAIL))
    answer = {
        "id": email,
        "choices": [
            {
                "message": {
                    "content": f"hi {email}",
                    "tool_calls": [
                        {"function": {"name": "f", "arguments": json.dumps({"to": email})}}
                    ],
                }
            }
        ],
    }
    restored = map_all(answer, vault.restore)
    assert restored["id"] == email  # ids are never text
    message = restored["choices"][0]["message"]
    assert message["content"] == f"hi {EMAIL}"
    assert json.loads(message["tool_calls"][0]["function"]["arguments"]) == {"to": EMAIL}


def config(**sections: Any) -> GuardrailsConfig:
    return GuardrailsConfig.model_validate(
        {
            "policies": {
                "pii": {"pii": {}},
                "strict": {"pii": {"mode": "block", "entities": ["CREDIT_CARD"]}},
                "short": {"max_prompt_chars": 50},
                "sql": {"deny": [{"name": "sql", "pattern": "drop table"}]},
                "topic": {"allow": [{"name": "bread", "pattern": "bread|flour"}]},
            },
            **sections,
        }
    )


def test_policies_combine_from_everywhere_they_are_attached() -> None:
    guard = Guard(
        config(
            default=["short"],
            routes={"r": ["sql"]},
            backends={"b": ["pii"]},
            kinds={"anthropic": ["strict"]},
            keys={"k": ["topic"]},
        ),
        {"b": "openai", "c": "anthropic", "v": "vllm"},
    )
    assert guard.policies_for("r", ["v"], None, None) == ("short", "sql")
    assert guard.policies_for(None, ["v", "c", "b"], "k", None) == (
        "short",
        "strict",
        "pii",
        "topic",
    )
    plan = guard.plan(("pii", "strict"))
    assert plan is not None and plan.pii is not None
    assert plan.pii.mode == "block"  # the strictest mode wins, entities add up
    assert "CREDIT_CARD" in plan.pii.entities and "EMAIL_ADDRESS" in plan.pii.entities


def test_config_mistakes_name_their_path() -> None:
    with pytest.raises(ValidationError, match=r"routes\.r: unknown policy 'nope'"):
        config(routes={"r": ["nope"]})
    with pytest.raises(ValidationError, match="unknown entity types"):
        GuardrailsConfig.model_validate({"policies": {"p": {"pii": {"entities": ["SHOE"]}}}})
    with pytest.raises(ValidationError, match="exactly one of `pattern` or `examples`"):
        GuardrailsConfig.model_validate({"policies": {"p": {"deny": [{"name": "x"}]}}})
    problems = config(kinds={"openia": ["pii"]}, routes={"ghost": ["pii"]}).reference_problems(
        {"r"}, {"b": "openai"}, {"openai", "vllm"}
    )
    assert problems == [
        "guardrails.routes.ghost: unknown route",
        "guardrails.kinds.openia: unknown backend kind (known: openai, vllm)",
    ]


def inspect(guard: Guard, names: tuple[str, ...], content: str) -> Any:
    plan = guard.plan(names)
    assert plan is not None
    body = {"messages": [{"role": "user", "content": content}]}
    return asyncio.run(guard.inspect(plan, [body, {"messages": body["messages"]}]))


def test_masking_blocking_and_failing_closed() -> None:
    detector = Planted({EMAIL: "EMAIL_ADDRESS", CARD: "CREDIT_CARD"})
    guard = Guard(config(), {}, detector=detector)
    done = inspect(guard, ("pii",), f"mail {EMAIL}, card {CARD}")
    assert done.action == "masked" and done.restore
    assert (
        done.bodies[0]["messages"][0]["content"] == "mail <EMAIL_ADDRESS_1>, card <CREDIT_CARD_1>"
    )
    assert done.bodies[1] == done.bodies[0]  # the native body the same, counted once
    assert done.entities == {"CREDIT_CARD": 1, "EMAIL_ADDRESS": 1}
    with pytest.raises(Refusal) as refused:
        inspect(guard, ("strict",), f"card {CARD}")
    assert (refused.value.status, refused.value.code) == (400, "pii_detected")
    assert CARD not in refused.value.message and "CREDIT_CARD (1)" in refused.value.message
    assert inspect(guard, ("strict",), f"mail {EMAIL}").action == "passed"  # not its entity
    down = Guard(config(), {}, detector=Planted({}, fail=True))
    with pytest.raises(Refusal) as unavailable:
        inspect(down, ("pii",), "anything")
    assert (unavailable.value.status, unavailable.value.code) == (503, "guardrail_unavailable")


def test_rules_and_sizes() -> None:
    guard = Guard(config(), {}, detector=Planted({}))
    for names, content, code in [
        (("sql",), "please DROP TABLE x", "content_denied"),
        (("topic",), "tell me about cars", "off_topic"),
        (("short",), "x" * 51, "prompt_too_large"),
    ]:
        with pytest.raises(Refusal) as refused:
            inspect(guard, names, content)
        assert refused.value.code == code
    assert inspect(guard, ("topic", "sql"), "bread with flour").action == "passed"


def test_backend_judge_verdicts() -> None:
    answers = {"unsafe\nS1, S10": True, "safe": False}

    for answer, flagged in answers.items():

        async def ask(name: str, body: dict[str, Any], answer: str = answer) -> str:
            assert "BEGIN CONVERSATION" in body["messages"][0]["content"]
            return answer

        guard = Guard(
            GuardrailsConfig.model_validate({"policies": {"j": {"judge": {"backend": "guard"}}}}),
            {},
            ask=ask,
        )
        if flagged:
            with pytest.raises(Refusal) as refused:
                inspect(guard, ("j",), "hello")
            assert refused.value.code == "content_flagged" and "S10" in refused.value.message
        else:
            assert inspect(guard, ("j",), "hello").verdict.describe() == "safe"


@pytest.fixture(scope="module")
def presidio() -> PresidioDetector:
    detector = PresidioDetector()
    detector.load()
    return detector


def test_the_real_detector_finds_each_kind(presidio: PresidioDetector) -> None:
    text = (
        "I'm Maria Gonzalez, maria@example.com, +44 20 7946 0958, card 4111 1111 1111 1111, "
        "IBAN GB82 WEST 1234 5698 7654 32, I live at 742 Evergreen Terrace. "
        "key sk-proj-abcdefghijklmnopqrstuvwx, password: Tr0ub4dor&3"
    )
    found = {
        text[f.start : f.end]: f.entity
        for f in presidio.find(
            text,
            frozenset(
                [
                    "PERSON",
                    "EMAIL_ADDRESS",
                    "PHONE_NUMBER",
                    "CREDIT_CARD",
                    "IBAN_CODE",
                    "STREET_ADDRESS",
                    "API_KEY",
                    "PASSWORD",
                ]
            ),
            0.5,
        )
    }
    assert found == {
        "Maria Gonzalez": "PERSON",
        "maria@example.com": "EMAIL_ADDRESS",
        "+44 20 7946 0958": "PHONE_NUMBER",
        "4111 1111 1111 1111": "CREDIT_CARD",
        "GB82 WEST 1234 5698 7654 32": "IBAN_CODE",
        "742 Evergreen Terrace": "STREET_ADDRESS",
        "sk-proj-abcdefghijklmnopqrstuvwx": "API_KEY",
        "Tr0ub4dor&3": "PASSWORD",
    }
    assert (
        presidio.find(
            "What is the capital of France? 2 + 2 = 4.",
            frozenset(["PERSON", "PHONE_NUMBER", "CREDIT_CARD", "EMAIL_ADDRESS"]),
            0.5,
        )
        == []
    )
