"""Budgets are caps (issue 19): whatever a budgeted key sends (n, best_of, no max_tokens,
requests it abandons or that time out, bursts, shadowed routes), its worst case is reserved
before it runs, every billed call is charged to it, and a key over a limit is refused before
any routing work. In process, on the real access state (`tests.unit.test_keys.start`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import openai
import pytest

from deployments import FakeBackend
from gateway.core.front import Native
from gateway.fronts.responses.wire import RESPONSES
from tests.unit.test_keys import QUESTION, Keyed, start

pytestmark = pytest.mark.asyncio(loop_scope="session")
PRICED = {"input_per_mtok": 1000, "output_per_mtok": 2000}  # 4 + 4 words: $0.012
LONG = " ".join(f"w{i}" for i in range(50))
CONFIG: dict[str, Any] = {
    "auth": {"mode": "keys", "sync_interval_s": 0.05, "budgeted_max_tokens": 8},
    "backends": {
        "dear": {"kind": "fake", "model": "dear-1", "pricing": PRICED},
        "long": {"kind": "fake", "model": "long-1", "reply": LONG, "pricing": PRICED},
        "slow": {"kind": "fake", "model": "slow-1", "latency_ms": 2000, "pricing": PRICED,
                 "timeouts": {"total_s": 0.2}, "retry": {"max_retries": 0}},
        "ghost": {"kind": "fake", "model": "ghost-1", "pricing": PRICED},
        "other": {"kind": "fake", "model": "other-1", "pricing": PRICED},
    },
    "routes": {"auto": {"candidates": ["dear"]}, "tried": {"candidates": ["dear", "other"]}},
    "experiments": {
        "copy": {"route": "tried", "arms": {"a": {"backend": "dear"}, "b": {"backend": "other"}},
                 "shadow": "ghost"},
    },
}  # fmt: skip


@pytest.fixture
async def capped(tmp_path: Path) -> AsyncIterator[Keyed]:
    keyed = await start(tmp_path, CONFIG)
    yield keyed
    await keyed.gateway.aclose()  # type: ignore[attr-defined]


def rows(keyed: Keyed) -> list[dict[str, Any]]:
    ledger = keyed.ledger  # type: ignore[attr-defined]
    ledger.flush(2.0)
    return list(ledger.rows())


def spend(keyed: Keyed, key_id: str) -> float:
    return float(keyed.state.op_get("key", key_id)["usage"]["spend_usd"])


async def test_n_and_best_of_are_reserved_in_full(capped: Keyed) -> None:
    """n=8 at max_tokens=4 can bill 32 output tokens ($0.069): more than $0.05 is left."""
    created = await capped.create("keys", name="many", budget_usd=0.05)
    client = capped.client(created["key"])
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4, n=8)
    assert caught.value.code == "insufficient_quota"
    with pytest.raises(openai.RateLimitError):
        await client.completions.create(model="dear", prompt="a b c d", max_tokens=4, best_of=8)
    raw = await client.chat.completions.with_raw_response.create(
        model="dear", messages=QUESTION, max_tokens=4, n=2
    )
    assert float(raw.headers["x-gateway-estimated-cost-usd"]) == pytest.approx(0.02, abs=0.005)


async def test_a_budgeted_key_without_max_tokens_gets_the_configured_cap(capped: Keyed) -> None:
    budgeted = capped.client((await capped.create("keys", name="b", budget_usd=10))["key"])
    answer = await budgeted.chat.completions.create(model="long", messages=QUESTION)
    assert answer.usage is not None and answer.usage.completion_tokens == 8  # the cap
    assert answer.choices[0].finish_reason == "length"
    free = capped.client((await capped.create("keys", name="f"))["key"])
    answer = await free.chat.completions.create(model="long", messages=QUESTION)
    assert answer.usage is not None and answer.usage.completion_tokens == 50  # no budget


async def test_a_timed_out_request_is_charged_its_estimate(capped: Keyed) -> None:
    created = await capped.create("keys", name="late", budget_usd=10)
    client = capped.client(created["key"])
    with pytest.raises(openai.APIStatusError) as caught:
        await client.chat.completions.create(model="slow", messages=QUESTION, max_tokens=4)
    assert caught.value.status_code == 504
    await asyncio.sleep(0.3)  # the key's spend is reported by the next sync
    row = next(r for r in rows(capped) if r["backend"] == "slow")
    assert row["status"] == 504 and row["cost_usd"] > 0.005  # billed upstream all the same
    assert row["usage_source"] == "estimated"
    assert spend(capped, created["id"]) == pytest.approx(row["cost_usd"])


async def test_an_abandoned_request_is_charged_its_estimate(capped: Keyed) -> None:
    created = await capped.create("keys", name="gone", budget_usd=10)
    request = capped.gateway.handle(  # type: ignore[attr-defined]
        "chat/completions",
        {"model": "slow", "messages": QUESTION, "max_tokens": 4},
        {"authorization": f"Bearer {created['key']}"},
        "abandoned-1",
    )
    task = asyncio.ensure_future(request)
    await asyncio.sleep(0.05)
    task.cancel()  # the client left while the backend generates
    with pytest.raises(asyncio.CancelledError):
        await task
    row = next(r for r in rows(capped) if r["request_id"] == "abandoned-1")
    assert row["status"] == 499 and row["cost_usd"] > 0.005


async def test_a_burst_of_parallel_requests_cannot_pass_the_budget(capped: Keyed) -> None:
    created = await capped.create("keys", name="burst", budget_usd=0.05, max_parallel=64)
    client = capped.client(created["key"])

    async def one() -> bool:
        try:
            await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4)
        except openai.RateLimitError:
            return False
        return True

    answered = sum(await asyncio.gather(*(one() for _ in range(40))))
    # Each reserves its worst case, $0.013 (5 prompt tokens by the router's count, 4 out):
    # three at once, a fourth would pass $0.05. One that settles ($0.012) before the others
    # are admitted frees $0.001, so a fourth may fit then; a fifth never can.
    assert 3 <= answered <= 4
    await asyncio.sleep(0.3)
    assert spend(capped, created["id"]) <= 0.05 + 1e-12


async def test_budgeted_keys_have_a_default_parallel_cap(tmp_path: Path) -> None:
    keyed = await start(tmp_path, CONFIG, budgeted_max_parallel=2)
    try:
        created = await keyed.create("keys", name="par", budget_usd=100)
        client = keyed.client(created["key"])
        slow = {"model": "slow", "messages": QUESTION, "max_tokens": 4}

        async def one() -> int:
            try:
                await client.chat.completions.create(**slow)  # type: ignore[call-overload]
            except openai.APIStatusError as exc:
                return exc.status_code
            return 200

        statuses = await asyncio.gather(*(one() for _ in range(6)))
        assert statuses.count(504) == 2  # two ran (and timed out upstream)
        assert statuses.count(429) == 4  # the rest were refused: parallel requests
    finally:
        await keyed.gateway.aclose()  # type: ignore[attr-defined]


async def test_a_key_over_its_budget_is_refused_before_routing(capped: Keyed) -> None:
    created = await capped.create("keys", name="over", budget_usd=0.0135)
    client = capped.client(created["key"])
    await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4)
    # What is left ($0.0015) is less than this request's worst case: refused, but a cheaper
    # request could still go, so the key is not blocked. Spent to the last cent, it is.
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4)
    path = f"/v1/gateway/keys/{created['id']}"
    patched = await capped.admin.patch(path, json={"budget_usd": 0.012})
    assert patched.status_code == 200
    await asyncio.sleep(0.2)  # the replica syncs the change
    with pytest.raises(openai.RateLimitError):
        await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4)
    routing = capped.gateway.routing  # type: ignore[attr-defined]
    calls = 0
    route = routing.route

    async def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        return await route(*args, **kwargs)

    routing.route = counted
    with pytest.raises(openai.RateLimitError) as caught:
        await client.chat.completions.create(model="dear", messages=QUESTION, max_tokens=4)
    assert caught.value.code == "insufficient_quota" and calls == 0


async def test_explain_count_tokens_and_feedback_are_metered(capped: Keyed) -> None:
    created = await capped.create("keys", name="meter", rpm=3)
    auth = {"authorization": f"Bearer {created['key']}"}
    body = {"model": "dear", "messages": QUESTION}
    admin = capped.admin
    assert (await admin.post("/v1/routing/explain", json=body, headers=auth)).status_code == 200
    counted = await admin.post(
        "/v1/messages/count_tokens", json={**body, "max_tokens": 1}, headers=auth
    )
    assert counted.status_code == 200
    scored = await admin.post("/v1/feedback", json={"request_id": "x", "score": 1}, headers=auth)
    assert scored.status_code == 404  # counted, and no such request of this key
    refused = await admin.post("/v1/routing/explain", json=body, headers=auth)
    assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limit_exceeded"


async def test_a_key_scores_only_its_own_requests(capped: Keyed) -> None:
    mine = await capped.create("keys", name="mine")
    theirs = await capped.create("keys", name="theirs")
    raw = await capped.client(mine["key"]).chat.completions.with_raw_response.create(
        model="dear", messages=QUESTION, max_tokens=4, extra_headers={"x-request-id": "mine-1"}
    )
    assert raw.http_response.status_code == 200
    rows(capped)  # written
    score = {"request_id": "mine-1", "score": 1}
    other = {"authorization": f"Bearer {theirs['key']}"}
    refused = await capped.admin.post("/v1/feedback", json=score, headers=other)
    assert refused.status_code == 404
    own = {"authorization": f"Bearer {mine['key']}"}
    assert (await capped.admin.post("/v1/feedback", json=score, headers=own)).status_code == 200
    assert (await capped.admin.post("/v1/feedback", json=score)).status_code == 200  # master


async def test_shadow_requests_are_charged_to_the_key_that_caused_them(capped: Keyed) -> None:
    created = await capped.create("keys", name="shadowed", budget_usd=10)
    client = capped.client(created["key"])
    for _ in range(4):
        await client.chat.completions.create(model="tried", messages=QUESTION, max_tokens=4)
    await asyncio.sleep(0.5)  # shadows end after their primaries; then a sync reports
    found = rows(capped)
    shadows = [r for r in found if r["arm"] == "shadow"]
    assert len(shadows) == 4 and all(r["key_id"] == created["id"] for r in shadows)
    total = sum(r["cost_usd"] or 0 for r in found if r["key_id"] == created["id"])
    assert spend(capped, created["id"]) == pytest.approx(total)
    assert total == pytest.approx(8 * 0.012)


async def test_a_responses_body_passed_through_gets_the_cap_too(capped: Keyed) -> None:
    """A backend that speaks the Responses API natively gets the client's own body: the
    output limit the budget was reserved for goes into it as `max_output_tokens`."""
    seen: list[dict[str, Any]] = []

    class SpeaksResponses(FakeBackend):
        async def complete(self, endpoint: Any, body: dict[str, Any]) -> dict[str, Any]:
            seen.append(body)
            usage = {"input_tokens": 4, "output_tokens": 2, "total_tokens": 6}
            return {"object": "response", "id": "resp_1", "output": [], "usage": usage}

    gateway = capped.gateway  # type: ignore[attr-defined]
    gateway.backends["long"] = SpeaksResponses(gateway.backends["long"].config)
    gateway.speaks["long"] = frozenset({"responses"})
    created = await capped.create("keys", name="native", budget_usd=10)
    headers = {"authorization": f"Bearer {created['key']}"}
    own = {"model": "long", "input": "one two three four"}
    chat = {"model": "long", "messages": QUESTION}
    reply = await gateway.handle(
        "chat/completions",
        chat,
        headers,
        "native-1",
        api="responses",
        native=Native(RESPONSES, own),
    )
    assert reply.status == 200 and reply.native
    assert seen == [{**own, "max_output_tokens": 8}]  # the configured cap
