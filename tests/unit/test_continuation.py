"""A stream that breaks after output reached the client, continued on the next backend of the
decision (`gateway.core.streaming`): over in-process `FakeBackend`s that break at every token
position, the client's text is the whole answer exactly once, one role event, one id, one
usage total, the finishing event naming the hand-over, and the ledger charging each backend
at its own price. The Messages front gets one well-formed Anthropic stream from it too."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from gateway.core.continuation import (
    CONTINUE_PROMPT,
    FIELD,
    Segment,
    Sent,
    Style,
    continued_body,
    style_of,
    trim_overlap,
)
from gateway.core.replies import StreamReply
from gateway.fronts.messages.front import serve_messages
from tests.helpers import fake_backends

REPLY = "one two three four five six seven eight"
WORDS = REPLY.split()
PRICE_A = {"input_per_mtok": 1.0, "output_per_mtok": 2.0}
PRICE_B = {"input_per_mtok": 10.0, "output_per_mtok": 20.0}


def config(tmp_path: Path, breaks_at: int, **route: Any) -> GatewayConfig:
    return GatewayConfig.load({
        "backends": {
            "a": {"kind": "fake", "model": "a-1", "reply": REPLY, "fail_after_tokens": breaks_at,
                  "pricing": PRICE_A},
            "b": {"kind": "fake", "model": "b-1", "reply": REPLY, "pricing": PRICE_B},
            # Breaks 2 tokens into what it continues; `c` finishes.
            "b2": {"kind": "fake", "model": "b-1", "reply": REPLY, "fail_after_tokens": 2,
                   "pricing": PRICE_B},
            "c": {"kind": "fake", "model": "c-1", "reply": REPLY},
            "down": {"kind": "fake", "model": "down-1", "fail_status": 503,
                     "retry": {"max_retries": 0}},
        },
        "routes": {
            "r": {"candidates": ["a"], "fallbacks": ["b"], **route},
            "twice": {"candidates": ["a"], "fallbacks": ["b2", "c"]},
            "alone": {"candidates": ["a"]},
            "dead-end": {"candidates": ["a"], "fallbacks": ["down"]},
        },
        "ledger": {"path": str(tmp_path / "ledger.sqlite")},
        "request_log": {"enabled": False},
    })  # fmt: skip


async def drained(reply: Any) -> bytes:
    """All of a streamed reply, closed after."""
    assert isinstance(reply, StreamReply)
    try:
        return b"".join([chunk async for chunk in reply])
    finally:
        await reply.aclose()


async def run(
    tmp_path: Path, breaks_at: int, body: dict[str, Any], endpoint: str = "chat/completions",
    **route: Any,
) -> tuple[list[dict[str, Any]], bytes, dict[str, Any]]:  # fmt: skip
    """The stream's JSON events, its raw bytes, and the request's ledger row."""
    loaded = config(tmp_path, breaks_at, **route)
    gateway, ledger = build_gateway(loaded, fake_backends(loaded), tmp_path)
    assert ledger is not None
    reply = await gateway.handle(endpoint, orjson.dumps({**body, "stream": True}), {}, "req-1")
    raw = await drained(reply)
    await gateway.aclose()
    (row,) = ledger.rows()
    events = [orjson.loads(e[6:]) for e in raw.split(b"\n\n") if e.startswith(b"data: {")]
    return events, raw, row


def chat_body(**extra: Any) -> dict[str, Any]:
    return {"model": "r", "messages": [{"role": "user", "content": "count"}], **extra}


def text_of(events: list[dict[str, Any]]) -> str:
    parts = []
    for event in events:
        for choice in event.get("choices") or []:
            parts.append((choice.get("delta") or {}).get("content") or choice.get("text") or "")
    return "".join(parts)


@pytest.mark.parametrize("breaks_at", range(1, len(WORDS)))
async def test_every_break_point_gives_the_whole_answer_once(
    tmp_path: Path, breaks_at: int
) -> None:
    body = chat_body(stream_options={"include_usage": True})
    events, raw, row = await run(tmp_path, breaks_at, body)
    assert text_of(events) == REPLY
    assert raw.endswith(b"data: [DONE]\n\n") and b'"error"' not in raw
    assert len({e["id"] for e in events}) == 1
    roles = [c for e in events for c in e["choices"] if "role" in (c.get("delta") or {})]
    assert len(roles) == 1
    (finish,) = [e for e in events if any(c.get("finish_reason") for c in e["choices"])]
    hand_over = {"from": "a", "to": "b", "after_tokens": breaks_at, "mode": "prefill"}
    assert finish[FIELD] == [hand_over]
    # One usage total: what both backends billed (`a`: the prompt and its tokens; `b`: the
    # prompt with the text it continued from, and the rest).
    usage = events[-1]["usage"]
    prompt = row["prompt_tokens"]
    assert (usage["prompt_tokens"], usage["completion_tokens"]) == (prompt, len(WORDS))
    assert usage["total_tokens"] == prompt + len(WORDS)
    assert (row["status"], row["backend"], row["continued_from"]) == (200, "b", "a")
    # `b` (a fake) counts its prompt's last user turn only: "count", 1 token; `a` is billed
    # the router's count of the prompt (the rest of the row's prompt tokens).
    a_prompt, b_prompt, b_out = prompt - 1, 1, len(WORDS) - breaks_at
    a_cost = (a_prompt * PRICE_A["input_per_mtok"] + breaks_at * PRICE_A["output_per_mtok"]) / 1e6
    b_cost = (b_prompt * PRICE_B["input_per_mtok"] + b_out * PRICE_B["output_per_mtok"]) / 1e6
    assert a_prompt > 1  # the router's count of the request's tokens
    assert row["cost_usd"] == pytest.approx(a_cost + b_cost)


async def test_a_completion_is_continued_from_its_prompt_and_the_text_sent(tmp_path: Path) -> None:
    body = {"model": "r", "prompt": "count", "max_tokens": 50}
    events, _, row = await run(tmp_path, 3, body, endpoint="completions")
    assert text_of(events) == REPLY
    assert row["continued_from"] == "a" and row["completion_tokens"] == len(WORDS)


async def test_a_continuation_that_breaks_is_continued_again(tmp_path: Path) -> None:
    events, _, row = await run(tmp_path, 2, chat_body(model="twice"))
    assert text_of(events) == REPLY
    (finish,) = [e for e in events if any(c.get("finish_reason") for c in e["choices"])]
    assert [(h["from"], h["to"], h["after_tokens"]) for h in finish[FIELD]] == [
        ("a", "b2", 2), ("b2", "c", 4)]  # fmt: skip
    assert (row["backend"], row["continued_from"], row["completion_tokens"]) == ("c", "a", 8)


@pytest.mark.parametrize(
    ("route", "setting"),
    [("alone", {}), ("r", {"resume_streams": False}), ("dead-end", {})],
)
async def test_without_a_next_backend_or_with_resuming_off_it_ends_with_an_error_event(
    tmp_path: Path, route: str, setting: dict[str, Any]
) -> None:
    events, raw, row = await run(tmp_path, 3, chat_body(model=route), **setting)
    assert text_of(events) == " ".join(WORDS[:3])
    assert b'"error"' in raw and raw.endswith(b"data: [DONE]\n\n")
    assert row["status"] >= 500 and row["continued_from"] is None
    assert row["cost_usd"] > 0  # `a` streamed tokens: they are billed


async def test_the_messages_front_streams_one_anthropic_message(tmp_path: Path) -> None:
    loaded = config(tmp_path, 3)
    gateway, _ = build_gateway(loaded, fake_backends(loaded), tmp_path)
    body = {"model": "r", "max_tokens": 64, "stream": True,
            "messages": [{"role": "user", "content": "count"}]}  # fmt: skip
    raw = await drained(await serve_messages(gateway, orjson.dumps(body), {}, "req-m"))
    await gateway.aclose()
    kinds = [line[7:] for line in raw.decode().splitlines() if line.startswith("event: ")]
    assert kinds.count("message_start") == 1 and kinds.count("message_stop") == 1
    assert "error" not in kinds
    deltas = [orjson.loads(line[6:]) for line in raw.decode().splitlines()
              if line.startswith("data: ") and '"text_delta"' in line]  # fmt: skip
    assert "".join(d["delta"]["text"] for d in deltas) == REPLY


def sent_after(*events: dict[str, Any], endpoint: str = "chat/completions") -> Sent:
    sent = Sent(endpoint)  # type: ignore[arg-type]
    sent.observe(b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events))
    return sent.settle()


def chunk(delta: dict[str, Any], index: int = 0) -> dict[str, Any]:
    return {"id": "c1", "choices": [{"index": index, "delta": delta, "finish_reason": None}]}


def test_what_is_never_continued() -> None:
    call = {"tool_calls": [{"index": 0, "function": {"arguments": '{"ci'}}]}
    assert "tool-call" in (sent_after(chunk(call)).why_not({}) or "")
    assert "n > 1" in (sent_after(chunk({"content": "x"}, index=1)).why_not({}) or "")
    assert "n > 1" in (sent_after(chunk({"content": "x"})).why_not({"n": 2}) or "")
    listed = sent_after({"choices": [{"index": 0, "text": "x"}]}, endpoint="completions")
    assert "list of prompts" in (listed.why_not({"prompt": ["a", "b"]}) or "")
    assert sent_after(chunk({"content": "x"})).why_not({}) is None


def test_each_style_asks_for_the_rest_its_own_way() -> None:
    sent = sent_after(chunk({"role": "assistant", "content": ""}), chunk({"content": "The cap"}),
                      chunk({"content": "ital is "}))  # fmt: skip
    body = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 10}
    prefill = continued_body("chat/completions", body, sent, style_of("vllm"))
    assert prefill["messages"][-1] == {"role": "assistant", "content": "The capital is "}
    assert prefill["continue_final_message"] and not prefill["add_generation_prompt"]
    assert prefill["max_tokens"] == 8  # two tokens were sent
    anthropic = continued_body("chat/completions", body, sent, style_of("anthropic"))
    assert anthropic["messages"][-1] == {"role": "assistant", "content": "The capital is"}
    assert "continue_final_message" not in anthropic
    prompt = continued_body("chat/completions", body, sent, style_of("openai"))
    assert prompt["messages"][-2:] == [
        {"role": "assistant", "content": "The capital is "},
        {"role": "user", "content": CONTINUE_PROMPT},
    ]
    assert body == {"messages": [{"role": "user", "content": "q"}], "max_tokens": 10}


def test_a_segment_drops_the_second_role_event_and_a_doubled_space() -> None:
    sent = sent_after(chunk({"role": "assistant", "content": ""}), chunk({"content": "Paris is "}))
    segment = Segment(sent, [], (3, 1), Style.VLLM_PREFILL)
    role = b"data: " + orjson.dumps({**chunk({"role": "assistant", "content": ""}), "id": "x"})
    word = b"data: " + orjson.dumps({**chunk({"content": " big"}), "id": "x"})
    out = segment(role + b"\n\n" + word + b"\n\n")
    (event,) = [orjson.loads(e[6:]) for e in out.split(b"\n\n") if e]
    assert event["id"] == "c1" and event["choices"][0]["delta"] == {"content": "big"}
    assert sent.settle().text == "Paris is big"
    assert Style.PROMPT is style_of("openai")


@pytest.mark.parametrize(
    ("rest", "kept"),
    [(" over the lazy dog.", " over the lazy dog."),  # a clean continuation
     ("The fox jumps over the lazy dog.", " the lazy dog."),  # started over
     ("jumps over the lazy dog.", " the lazy dog."),  # picked up a few words back
     (" over and over", " over and over"),  # "over" again is new text, not a repeat
     ("s over it", "s over it")],  # no match at a word boundary: kept
)  # fmt: skip
def test_what_a_prompted_continuation_repeats_is_dropped(rest: str, kept: str) -> None:
    assert trim_overlap("The fox jumps over", rest) == kept


async def test_a_prompted_continuation_holds_its_start_until_it_can_drop_a_repeat() -> None:
    sent = sent_after(chunk({"role": "assistant", "content": ""}), chunk({"content": "The fox"}))
    segment = Segment(sent, [], (0, 0), Style.PROMPT)
    events = [chunk({"content": piece}) for piece in ("The ", "fox", " runs", " far", " away")]
    finish = {"id": "x", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
    out = b"".join(segment(b"data: " + orjson.dumps(e) + b"\n\n") for e in [*events, finish])
    assert out.count(b"data: ") < len(events) + 1  # the start was held back, then sent as one
    assert sent.settle().text == "The fox runs far away"


async def test_explain_says_who_would_continue_a_broken_stream(tmp_path: Path) -> None:
    loaded = config(tmp_path, 3)
    gateway, _ = build_gateway(loaded, fake_backends(loaded), tmp_path)
    for route, expected in (("twice", [("b2", "prefill"), ("c", "prefill")]), ("alone", [])):
        reply = await gateway.explain(orjson.dumps(chat_body(model=route)), {}, "req-e")
        explained = orjson.loads(reply.body)
        assert explained["resume_streams"] is True
        assert [(c["backend"], c["mode"]) for c in explained["continued_by"]] == expected
    await gateway.aclose()


async def test_a_prompted_continuation_is_held_back_no_longer_than_it_needs() -> None:
    said = "A long answer that went on for a while about many things, " * 5
    sent = sent_after(chunk({"content": said}))
    segment = Segment(sent, [], (0, 0), Style.PROMPT)
    pieces = ["and then ", "something ", "else ", "entirely, ", "new ", "words ", "that ",
              "never ", "repeat ", "what ", "was ", "said ", "before, ", "at ", "all."]  # fmt: skip
    released = [segment(b"data: " + orjson.dumps(chunk({"content": p})) + b"\n\n")
                for p in pieces]  # fmt: skip
    first = next(i for i, out in enumerate(released) if out)
    assert 0 < first < len(pieces) - 1  # held past 64 characters only, not to the end
    assert sent.settle().text == said + "".join(pieces)
