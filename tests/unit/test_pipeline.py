"""The request pipeline without Ray or HTTP: a `Gateway` over in-process `FakeBackend`s, the
way httpx is tested over `MockTransport`. Every request's record reaches the ledger, and the
feedback channel leaves no counter behind."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from gateway.config import GatewayConfig
from gateway.core.attempts import AttemptOutcome, Observer
from gateway.core.build import build_gateway
from gateway.core.pipeline import Gateway
from gateway.core.replies import Reply, StreamReply
from llmops import Ledger, RequestRecord
from tests.helpers import fake_backends

FAST_RETRY = {"max_retries": 1, "initial_backoff_ms": 1, "max_backoff_ms": 2}
CONFIG: dict[str, Any] = {
    "backends": {
        "good": {"kind": "fake", "model": "good-1", "pricing": {"input_per_mtok": 1,
                                                                "output_per_mtok": 2}},
        "broken": {"kind": "fake", "model": "broken-1", "fail_status": 503,
                   "retry": {"max_retries": 0}},
        "flaky": {"kind": "fake", "model": "flaky-1", "fail_status": 503, "fail_times": 1,
                  "retry": FAST_RETRY},
        "refuses": {"kind": "fake", "model": "refuses-1", "fail_status": 400},
        "sleepy": {"kind": "fake", "model": "sleepy-1", "latency_ms": 300,
                   "timeouts": {"first_token_s": 0.05, "total_s": 0.1},
                   "retry": {"max_retries": 0}},
        "trickle": {"kind": "fake", "model": "trickle-1", "reply": "a b c d e f g h",
                    "token_interval_ms": 20},
        "snaps": {"kind": "fake", "model": "snaps-1", "reply": "a b c d", "fail_after_tokens": 2},
        "shadow": {"kind": "fake", "model": "shadow-1", "reply": "shadowed"},
    },
    "routes": {
        "failover": {"candidates": ["broken"], "fallbacks": ["good"]},
        "ab": {"candidates": ["good"]},
    },
    "experiments": {"x": {"route": "ab", "arms": {"one": {"backend": "good"},
                                                  "two": {"backend": "trickle"}},
                          "shadow": "shadow"}},
}  # fmt: skip


class Counting(Observer):
    """Counts what the channel says: starts, ends, finished requests."""

    def __init__(self) -> None:
        self.started = 0
        self.ended: list[AttemptOutcome] = []
        self.finished: list[RequestRecord] = []

    def attempt_started(self, backend: str) -> None:
        self.started += 1

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        self.ended.append(outcome)

    def request_finished(self, record: RequestRecord) -> None:
        self.finished.append(record)


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        config = GatewayConfig.load(
            {
                **CONFIG,
                "ledger": {"path": str(tmp_path / "ledger.sqlite")},
                "request_log": {"path": str(tmp_path / "requests.jsonl")},
            }
        )
        self.backends = fake_backends(config)
        self.counting = Counting()
        gateway, ledger = build_gateway(
            config, self.backends, tmp_path, extra_observers=[self.counting]
        )
        assert ledger is not None
        self.gateway: Gateway = gateway
        self.ledger: Ledger = ledger
        self.ids = (f"req-{n}" for n in range(10**6))

    async def call(self, model: str, **body: Any) -> Reply | StreamReply:
        body = {"model": model, "messages": [{"role": "user", "content": "hi there"}], **body}
        return await self.gateway.handle("chat/completions", orjson.dumps(body), {}, next(self.ids))

    async def read(self, reply: Reply | StreamReply) -> bytes:
        assert isinstance(reply, StreamReply)
        try:
            return b"".join([chunk async for chunk in reply])
        finally:
            await reply.aclose()

    async def rows(self) -> list[dict[str, Any]]:
        await self.gateway.aclose()  # writes every queued row
        return self.ledger.rows()

    def assert_settled(self) -> None:
        """No counter is left behind: nothing in flight, no probe slot held."""
        for name, stats in self.gateway.routing.live.stats.items():
            assert stats.in_flight == 0, name
        for name, guard in self.gateway.resilience.guards.items():
            assert not guard.breaker._probe_in_flight, name
        assert self.counting.started == len(self.counting.ended)


@pytest.fixture
def harness(tmp_path: Path) -> Iterator[Harness]:
    yield Harness(tmp_path)


async def test_success_is_answered_and_recorded(harness: Harness) -> None:
    reply = await harness.call("good")
    assert isinstance(reply, Reply) and reply.status == 200
    assert orjson.loads(reply.body)["choices"][0]["message"]["content"] == "hi there"
    assert reply.headers["x-gateway-backend"] == "good"
    (row,) = await harness.rows()
    assert (row["backend"], row["status"], row["usage_source"]) == ("good", 200, "upstream")
    assert row["cost_usd"] == pytest.approx((2 * 1 + 2 * 2) / 1e6)
    harness.assert_settled()


async def test_failure_falls_back_before_any_retry(harness: Harness) -> None:
    reply = await harness.call("failover")
    assert isinstance(reply, Reply) and reply.status == 200
    assert reply.headers["x-gateway-backend"] == "good"
    assert reply.headers["x-gateway-attempts"] == "2"
    assert [o.backend for o in harness.counting.ended] == ["broken", "good"]
    assert harness.counting.ended[0].error is not None
    (record,) = harness.counting.finished
    assert record.attempts == ["broken", "good"] and record.backend == "good"
    harness.assert_settled()


async def test_retry_after_backoff_on_the_same_backend(harness: Harness) -> None:
    reply = await harness.call("flaky")
    assert isinstance(reply, Reply) and reply.status == 200
    assert reply.headers["x-gateway-attempts"] == "2"
    assert len(harness.backends["flaky"].calls) == 2
    harness.assert_settled()


async def test_client_error_is_answered_at_once_and_recorded(harness: Harness) -> None:
    reply = await harness.call("refuses")
    assert isinstance(reply, Reply) and reply.status == 400
    (row,) = await harness.rows()
    assert row["status"] == 400 and row["backend"] == "refuses"
    assert harness.gateway.resilience.describe("refuses")["consecutive_failures"] == 0


async def test_stream_hides_the_usage_the_gateway_asked_for(harness: Harness) -> None:
    body = await harness.read(await harness.call("trickle", stream=True))
    assert body.endswith(b"data: [DONE]\n\n") and b'"usage"' not in body
    sent = harness.backends["trickle"].calls[0][1]
    assert sent["stream_options"] == {"include_usage": True}  # asked upstream all the same
    (row,) = await harness.rows()
    assert (row["completion_tokens"], row["usage_source"], row["status"]) == (8, "upstream", 200)
    assert row["ttft_ms"] is not None
    harness.assert_settled()


async def test_stream_keeps_the_usage_a_client_asked_for(harness: Harness) -> None:
    body = await harness.read(
        await harness.call("trickle", stream=True, stream_options={"include_usage": True})
    )
    events = [orjson.loads(e[6:]) for e in body.split(b"\n\n") if e.startswith(b"data: {")]
    assert events[-1]["usage"]["completion_tokens"] == 8
    harness.assert_settled()


async def test_first_token_timeout_is_a_504_and_a_backend_failure(harness: Harness) -> None:
    for stream in (False, True):
        reply = await harness.call("sleepy", stream=stream)
        assert isinstance(reply, Reply) and reply.status == 504
        assert orjson.loads(reply.body)["error"]["code"] == "upstream_timeout"
    assert harness.gateway.resilience.describe("sleepy")["consecutive_failures"] == 2
    rows = await harness.rows()
    assert [r["status"] for r in rows] == [504, 504]
    harness.assert_settled()


async def test_stream_broken_mid_way_ends_with_an_error_event(harness: Harness) -> None:
    body = await harness.read(await harness.call("snaps", stream=True))
    assert b"upstream_stream_broken" in body and body.endswith(b"data: [DONE]\n\n")
    (outcome,) = harness.counting.ended
    assert outcome.error is not None and outcome.first_byte is not None
    (row,) = await harness.rows()
    assert (row["status"], row["error_code"]) == (502, "upstream_stream_broken")
    harness.assert_settled()


async def test_shadow_is_recorded_beside_its_primary(harness: Harness) -> None:
    reply = await harness.call("ab", user="someone")
    assert isinstance(reply, Reply) and reply.status == 200
    rows = {row["request_id"]: row for row in await harness.rows()}  # aclose drains shadows
    (primary_id,) = [r for r in rows if not r.endswith("#shadow")]
    shadow = rows[f"{primary_id}#shadow"]
    assert (shadow["backend"], shadow["arm"]) == ("shadow", "shadow")
    assert shadow["shadow_of"] == primary_id
    assert rows[primary_id]["experiment"] == "x"
    harness.assert_settled()


async def test_client_leaving_is_recorded_and_frees_the_backend(harness: Harness) -> None:
    waiting = asyncio.create_task(harness.call("trickle"))  # 8 tokens, 20 ms apart
    await asyncio.sleep(0.05)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    reply = await harness.call("trickle", stream=True)
    assert isinstance(reply, StreamReply)
    await anext(reply)
    await reply.aclose()  # the client went away mid-stream
    await reply.aclose()  # closing twice records once
    rows = await harness.rows()
    assert [(r["status"], r["error_code"]) for r in rows] == [(499, "client_disconnected")] * 2
    assert all(o.cancelled for o in harness.counting.ended)
    harness.assert_settled()


async def test_bad_input_is_a_400_with_openai_shape(harness: Harness) -> None:
    reply = await harness.gateway.handle(
        "chat/completions", b'{"model": "good", "messages": [{"role": "user"}]}', {}, "r1"
    )
    assert isinstance(reply, Reply) and reply.status == 400
    error = orjson.loads(reply.body)["error"]
    assert error["param"] == "messages[0].content"
    assert error["code"] == "missing_required_parameter"


async def test_a_thousand_mixed_requests_leave_every_counter_at_zero(harness: Harness) -> None:
    rng = random.Random(7)
    kinds = ["good", "failover", "flaky", "refuses", "sleepy", "snaps", "trickle", "leave",
             "stream-leave", "ab"]  # fmt: skip

    async def one(kind: str) -> None:
        stream = rng.random() < 0.5
        if kind == "leave":
            task = asyncio.create_task(harness.call("trickle", stream=stream))
            await asyncio.sleep(rng.random() * 0.1)
            task.cancel()
            try:
                reply = await task
            except asyncio.CancelledError:
                return
            if isinstance(reply, StreamReply):
                await reply.aclose()
            return
        reply = await harness.call("trickle" if kind == "stream-leave" else kind, stream=stream)
        if isinstance(reply, StreamReply):
            if kind == "stream-leave":
                await anext(reply)
                await reply.aclose()
            else:
                await harness.read(reply)

    harness.backends["flaky"].config = harness.backends["flaky"].config.model_copy(
        update={"fail_times": None, "fail_status": None}
    )
    requests = [rng.choice(kinds) for _ in range(1000)]
    for start in range(0, len(requests), 100):  # 100 at a time
        await asyncio.gather(*(one(kind) for kind in requests[start : start + 100]))
    primaries = [r for r in await harness.rows() if not r["request_id"].endswith("#shadow")]
    assert len(primaries) == 1000  # one row per request, whatever became of it
    assert len(harness.counting.finished) == 1000 + requests.count("ab")
    harness.assert_settled()
    statuses = {r["status"] for r in primaries}
    assert {200, 400, 499, 502, 504} <= statuses


async def test_warm_up_before_ready_records_nothing(harness: Harness) -> None:
    from deployments import WarmupConfig
    from gateway.config import GatewayConfig
    from gateway.http.views import health_report

    harness.gateway.warmups = {"trickle": WarmupConfig(concurrency=3, rounds=2, prompt_words=5)}
    harness.gateway.start()
    assert harness.gateway.warming == {"router", "trickle"}
    config = GatewayConfig.load(CONFIG)
    status, report = await health_report(config, harness.gateway)
    assert (status, report["status"]) == (503, "starting")
    assert report["warming"] == ["router", "trickle"]
    for _ in range(200):
        if not harness.gateway.warming:
            break
        await asyncio.sleep(0.05)
    assert harness.gateway.warming == set()
    calls = harness.backends["trickle"].calls
    assert len(calls) == 6 and sum(bool(body.get("stream")) for _, body in calls) == 3
    assert len({body["messages"][0]["content"] for _, body in calls}) == 6  # no shared prompt
    status, report = await health_report(config, harness.gateway)
    assert status == 200 and "warming" not in report
    assert await harness.rows() == []  # warm-up is not traffic: no ledger rows
    harness.assert_settled()
