"""The response cache on the running stack, driven by the official clients: hits and misses
for chat, Messages and Responses, streamed and not (a hit streams the same events a live answer
does); no answer crosses keys; TTL and the admin purge; hits in the ledger at cost 0 with what
they saved. And provider prompt caches priced right: vLLM's prefix cache (`cached_tokens`)
and the Anthropic stand-in's `cache_control` (reads and writes), each at its own price."""

from __future__ import annotations

import secrets
import time
from typing import Any

import anthropic
import httpx
import pytest

from tests.integration.conftest import CACHED_PRICES, Stack
from tests.integration.test_messages_api import ledger_row

pytestmark = pytest.mark.integration


def fresh(text: str) -> str:
    """A prompt no earlier run or test has sent."""
    return f"{text} [{secrets.token_hex(4)}]"


def chat(stack: Stack, key: str = "sk-one", **body: Any) -> tuple[str, str]:
    """(x-gateway-cache, answer) of one chat completion."""
    client = stack.client(api_key=key)
    raw = client.chat.completions.with_raw_response.create(**{"temperature": 0, **body})
    return raw.headers["x-gateway-cache"], raw.parse().choices[0].message.content or ""


def streamed(stack: Stack, **body: Any) -> tuple[str, list[str], list[Any]]:
    """(x-gateway-cache, text deltas, every chunk without its id) of one streamed completion."""
    client = stack.client(api_key="sk-one")
    with client.chat.completions.with_streaming_response.create(
        stream=True, temperature=0, **body
    ) as response:
        header = response.headers["x-gateway-cache"]
        chunks = list(response.parse())
    deltas = [c.choices[0].delta.content or "" for c in chunks if c.choices]
    shapes = [c.model_dump(exclude={"id", "created"}) for c in chunks]
    return header, deltas, shapes


def test_chat_repeats_are_hits_at_cost_zero_and_in_the_usage(stack: Stack) -> None:
    since = time.time() - 1
    messages = [{"role": "user", "content": fresh("Cache me")}]
    raw = stack.client(api_key="sk-one").chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0
    )
    hit = stack.client(api_key="sk-one").chat.completions.with_raw_response.create(
        model="cached", messages=messages, temperature=0
    )
    assert (raw.headers["x-gateway-cache"], hit.headers["x-gateway-cache"]) == ("miss", "hit")
    assert hit.parse().choices[0].message == raw.parse().choices[0].message
    assert hit.parse().id != raw.parse().id
    row = ledger_row(stack, hit.headers["x-request-id"])
    assert (row["cache"], row["cost_usd"], row["usage_source"]) == ("hit", 0.0, "cache")
    response = httpx.get(
        f"{stack.base_url}/gateway/usage", params={"group_by": "route", "since": since}
    )
    (cached,) = [r for r in response.json()["data"] if r["route"] == "cached"]
    assert cached["cache_hits"] >= 1 and cached["cache_misses"] >= 1
    # Sampling (no temperature: 1.0) is not cached; no-store skips the cache.
    assert chat(stack, model="cached", messages=messages, temperature=1)[0] == "bypass"
    no_store = {"extra_headers": {"x-gateway-cache": "no-store"}}
    assert chat(stack, model="cached", messages=messages, **no_store)[0] == "bypass"


def test_a_stream_hit_is_the_same_events_as_the_live_stream(stack: Stack) -> None:
    messages = [{"role": "user", "content": fresh("Stream me please")}]
    options = {"include_usage": True}
    live = streamed(stack, model="cached", messages=messages, stream_options=options)
    again = streamed(stack, model="cached", messages=messages, stream_options=options)
    assert (live[0], again[0]) == ("miss", "hit")
    assert again[1] == live[1] and "".join(live[1])
    assert again[2] == live[2] and again[2][-1]["usage"]["completion_tokens"] > 0


def test_no_answer_crosses_keys(stack: Stack) -> None:
    messages = [{"role": "user", "content": fresh("Only mine")}]
    assert chat(stack, "sk-alice", model="cached", messages=messages)[0] == "miss"
    assert chat(stack, "sk-bob", model="cached", messages=messages)[0] == "miss"
    assert chat(stack, "sk-alice", model="cached", messages=messages)[0] == "hit"


def test_messages_and_responses_hit_whole_and_streamed(stack: Stack) -> None:
    sdk = anthropic.Anthropic(base_url=stack.root_url, api_key="sk-one", max_retries=0)
    body: Any = {  # this SDK has no `temperature` argument: the API still takes it
        "model": "cached", "max_tokens": 16, "extra_body": {"temperature": 0},
        "messages": [{"role": "user", "content": fresh("Messages cached")}],
    }  # fmt: skip
    first = sdk.messages.with_raw_response.create(**body)
    second = sdk.messages.with_raw_response.create(**body)
    assert [r.headers["x-gateway-cache"] for r in (first, second)] == ["miss", "hit"]
    assert second.parse().content == first.parse().content
    texts = []
    for _ in range(2):
        with sdk.messages.stream(**body) as stream:
            texts.append((stream.response.headers["x-gateway-cache"], stream.get_final_text()))
    assert texts[1] == ("hit", texts[0][1]) and texts[0][1]

    client = stack.client(api_key="sk-one")
    request: Any = {"model": "cached", "input": fresh("Responses cached"), "temperature": 0,
                    "store": False}  # fmt: skip
    made = [client.responses.with_raw_response.create(**request) for _ in range(2)]
    assert [r.headers["x-gateway-cache"] for r in made] == ["miss", "hit"]
    assert made[1].parse().output_text == made[0].parse().output_text
    assert made[1].parse().id != made[0].parse().id
    events = []
    for _ in range(2):
        with client.responses.with_streaming_response.create(stream=True, **request) as raw:
            kinds = [event.type for event in raw.parse()]
            events.append((raw.headers["x-gateway-cache"], kinds))
    assert events[1] == ("hit", events[0][1]) and events[0][1][-1] == "response.completed"


def test_entries_expire_and_an_admin_purges_them(stack: Stack) -> None:
    messages = [{"role": "user", "content": fresh("Brief")}]
    chat(stack, model="cached-briefly", messages=messages)
    assert chat(stack, "sk-other", model="cached-briefly", messages=messages)[0] == "hit"  # shared
    time.sleep(2.5)
    assert chat(stack, model="cached-briefly", messages=messages)[0] == "miss"
    described = httpx.get(f"{stack.base_url}/gateway/cache").json()
    assert described["entries"] >= 1 and described["routes"]["cached-briefly"]["hits"] >= 1
    purged = httpx.delete(f"{stack.base_url}/gateway/cache", params={"route": "cached-briefly"})
    assert purged.status_code == 200 and purged.json()["removed"] >= 1
    assert chat(stack, model="cached-briefly", messages=messages)[0] == "miss"
    wrong = httpx.delete(f"{stack.base_url}/gateway/cache", params={"route": "nowhere"})
    assert wrong.status_code == 400 and wrong.json()["error"]["param"] == "route"


def _cost(prices: dict[str, float], row: dict[str, Any]) -> float:
    read, written = row["cached_tokens"] or 0, row["cache_write_tokens"] or 0
    fresh_tokens = row["prompt_tokens"] - read - written
    return (
        fresh_tokens * prices["input_per_mtok"]
        + read * prices["cached_input_per_mtok"]
        + written * prices.get("cache_write_per_mtok", prices["input_per_mtok"])
        + row["completion_tokens"] * prices["output_per_mtok"]
    ) / 1e6


def test_vllm_prefix_cache_reads_are_priced_as_cached_input(stack: Stack) -> None:
    system = fresh("You answer briefly. ") + "You answer briefly and politely. " * 25
    messages = [{"role": "system", "content": system}, {"role": "user", "content": "Hi"}]
    rows = []
    for _ in range(2):
        raw = stack.client().chat.completions.with_raw_response.create(
            model="upstream-priced", messages=messages, max_tokens=2, temperature=0
        )
        rows.append(ledger_row(stack, raw.headers["x-request-id"]))
    assert rows[1]["cached_tokens"] and rows[1]["cached_tokens"] >= 128  # vLLM's block
    prices = CACHED_PRICES["upstream-priced"]
    for row in rows:
        assert row["cost_usd"] == pytest.approx(_cost(prices, row), rel=1e-9)
    assert not rows[0]["cached_tokens"] and rows[1]["cost_usd"] < rows[0]["cost_usd"]


def test_anthropic_cache_writes_and_reads_have_their_prices(stack: Stack) -> None:
    sdk = anthropic.Anthropic(base_url=stack.root_url, api_key="unused", max_retries=0)
    system: Any = [{"type": "text", "text": fresh("A long shared preamble. ") * 20,
                    "cache_control": {"type": "ephemeral"}}]  # fmt: skip
    rows, usages = [], []
    for _ in range(2):
        raw = sdk.messages.with_raw_response.create(
            model="claude-priced", max_tokens=8, system=system,
            messages=[{"role": "user", "content": "Hi"}],
        )  # fmt: skip
        usages.append(raw.parse().usage)
        rows.append(ledger_row(stack, raw.headers["x-request-id"]))
    assert usages[0].cache_creation_input_tokens and not usages[0].cache_read_input_tokens
    assert usages[1].cache_read_input_tokens == usages[0].cache_creation_input_tokens
    assert rows[0]["cache_write_tokens"] == usages[0].cache_creation_input_tokens
    assert rows[1]["cached_tokens"] == usages[1].cache_read_input_tokens
    prices = CACHED_PRICES["claude-priced"]
    for row in rows:
        assert row["cost_usd"] == pytest.approx(_cost(prices, row), rel=1e-9)
    assert rows[1]["cost_usd"] < rows[0]["cost_usd"]  # reads at 0.1x, writes at 1.25x
