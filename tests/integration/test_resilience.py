"""Resilience on the real stack: hangs, overload, flaky and dying upstreams, client disconnects."""

from __future__ import annotations

import asyncio
import os
import random
import re
import signal
import statistics
import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration

HI = [{"role": "user", "content": "hi"}]


def chat(stack: Stack, model: str, timeout: float = 30, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{stack.base_url}/chat/completions",
        json={"model": model, "messages": HI, **extra},
        timeout=timeout,
    )


def stub_stats(stack: Stack, name: str) -> dict[str, Any]:
    result: dict[str, Any] = httpx.get(f"{stack.stubs[name][0]}/_stats").json()
    return result


def test_hanging_upstream_times_out_then_its_circuit_opens(stack: Stack) -> None:
    durations = []
    for _ in range(2):
        started = time.monotonic()
        response = chat(stack, "void")
        durations.append(time.monotonic() - started)
        assert response.status_code == 504, response.text
        assert response.json()["error"]["code"] == "upstream_timeout"
    assert all(d < 3 for d in durations)  # total_s 1.5, not the client's 30
    started = time.monotonic()
    refused = chat(stack, "void", stream=True)
    assert time.monotonic() - started < 0.5  # all candidates down: at once, never a hang
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "no_backend_available"
    assert 50 <= int(refused.headers["retry-after"]) <= 60
    explain = httpx.post(f"{stack.base_url}/routing/explain", json={"model": "void",
                         "messages": HI})  # fmt: skip
    assert explain.status_code == 503
    states = httpx.get(f"{stack.base_url}/gateway/backends").json()["data"]
    blackhole = next(b for b in states if b["id"] == "blackhole")
    assert blackhole["circuit"]["state"] == "open"
    assert "2 consecutive failures" in blackhole["circuit"]["reason"]


def test_backends_endpoint_reports_health_circuits_latency_and_replicas(stack: Stack) -> None:
    chat(stack, "echo")
    data = {b["id"]: b for b in httpx.get(f"{stack.base_url}/gateway/backends").json()["data"]}
    echo = data["echo"]
    assert echo["health"]["available"] and echo["circuit"]["state"] == "closed"
    assert echo["deployment"]["status"] == "HEALTHY"
    assert echo["deployment"]["replicas"].get("RUNNING", 0) >= 1
    assert data["tiny"]["deployment"]["replicas"]["RUNNING"] == 1
    assert data["fast-dear"]["deployment"]["status"] == "IN_INGRESS"
    assert data["nokey"]["deployment"]["status"] == "NOT_DEPLOYED"
    assert data["nokey"]["health"]["reason"]
    assert {"ttft_ms", "ttft_p90_ms", "tpot_ms", "samples", "source"} <= set(echo["latency"])
    # The engine's dtype as the deploy chose it (TINY_ENGINE leaves `dtype` to auto).
    engine = data["tiny"]["engine"]
    assert engine["dtype"] in ("bfloat16", "float32") and engine["dtype_choice"].startswith("auto")
    assert "engine" not in echo


def test_explain_shows_circuit_state(stack: Stack) -> None:
    body = {"model": "auto", "messages": HI}
    explanation = httpx.post(f"{stack.base_url}/routing/explain", json=body).json()
    assert {c["circuit"] for c in explanation["candidates"]} == {"closed"}


@pytest.mark.parametrize("backend", ["narrow", "narrow-local"])
async def test_overload_is_429_with_retry_after(stack: Stack, backend: str) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": backend, "messages": HI}
        responses = await asyncio.gather(
            *(client.post(f"{stack.base_url}/chat/completions", json=body) for _ in range(6))
        )
    statuses = sorted(r.status_code for r in responses)
    # One runs (and maybe one waits in the queue); the rest are refused at once, not piled up.
    assert set(statuses) == {200, 429} and statuses.count(200) <= 2, statuses
    limited = [r for r in responses if r.status_code == 429]
    assert all(r.json()["error"]["code"] == "backend_overloaded" for r in limited)
    assert all(int(r.headers["retry-after"]) >= 1 for r in limited)


async def _load(
    stack: Stack, model: str, total: int, concurrency: int, on_progress: Any = None
) -> list[tuple[str, bool]]:
    """`total` requests, half streamed. Returns every failure as (description, whether the
    client had already received tokens of that answer)."""
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    failures: list[tuple[str, bool]] = []
    done = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for index in range(total):
        queue.put_nowait(index)

    async def one(index: int) -> None:
        messages: Any = [{"role": "user", "content": f"request {index}"}]
        received = ""
        try:
            if index % 2:
                stream = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=8, stream=True
                )
                async for chunk in stream:
                    received += (chunk.choices[0].delta.content or "") if chunk.choices else ""
            else:
                completion = await client.chat.completions.create(
                    model=model, messages=messages, max_tokens=8
                )
                received = completion.choices[0].message.content or ""
            if not received:
                raise AssertionError("empty answer")
        except Exception as exc:
            kind = "stream" if index % 2 else "plain"
            failures.append((f"{kind} {index}: {exc!r}", bool(received)))

    async def worker() -> None:
        nonlocal done
        while not queue.empty():
            await one(queue.get_nowait())
            done += 1
            if on_progress is not None:
                on_progress(done)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await client.close()
    return failures


async def test_upstream_failing_30_percent_with_a_fallback_loses_nothing(stack: Stack) -> None:
    httpx.post(f"{stack.stubs['flaky30'][0]}/_reset")
    failures = await _load(stack, "flaky-then-backup", total=150, concurrency=8)
    assert failures == []  # a 503 is always before the first token: fallback or retry
    stats = stub_stats(stack, "flaky30")
    assert stats["failed"] >= 20  # ~30% of 150 first tries really failed


async def test_upstream_killed_mid_load_loses_nothing(stack: Stack) -> None:
    _, doomed = stack.stubs["doomed"]
    total, kill_after = 160, 50

    def progress(done: int) -> None:
        if done == kill_after and doomed.poll() is None:
            os.killpg(doomed.pid, signal.SIGKILL)  # a crash: connections reset, no goodbye

    failures = await _load(stack, "survives", total=total, concurrency=8, on_progress=progress)
    assert doomed.poll() is not None, "the upstream was not killed"
    # Every request that had not received a token when the upstream died was served by the
    # fallback, and every stream cut after its tokens began to flow was continued there
    # (`resume_streams`): nothing is lost, not even mid-answer.
    assert failures == []
    backends = {b["id"]: b for b in httpx.get(f"{stack.base_url}/gateway/backends").json()["data"]}
    assert backends["doomed"]["circuit"]["state"] == "open"


@pytest.mark.parametrize("backend", ["dawdler", "dawdler-local"])
def test_client_disconnect_cancels_the_upstream_stream_within_1s(
    stack: Stack, backend: str
) -> None:
    httpx.post(f"{stack.stubs['dawdler'][0]}/_reset")
    with httpx.stream(
        "POST",
        f"{stack.base_url}/chat/completions",
        json={"model": backend, "messages": HI, "stream": True},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        lines = response.iter_lines()
        assert next(lines).startswith("data: ")
        left_at = time.time()
    # Leaving the block closed the connection after one of twenty tokens (2 s in all).
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not stub_stats(stack, "dawdler")["gone"]:
        time.sleep(0.05)
    gone = stub_stats(stack, "dawdler")["gone"]
    assert gone, "the upstream never saw the client leave"
    assert gone[0] - left_at < 1.0


async def _walk_away_from_a_plain_request(stack: Stack, backend: str) -> float | None:
    """Seconds from the client closing its connection to the upstream seeing it, or None."""
    httpx.post(f"{stack.stubs['dawdler'][0]}/_reset")
    async with httpx.AsyncClient(timeout=30) as client:
        body = {"model": backend, "messages": HI}
        call = asyncio.create_task(client.post(f"{stack.base_url}/chat/completions", json=body))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not stub_stats(stack, "dawdler")["requests"]:
            await asyncio.sleep(0.02)
        assert stub_stats(stack, "dawdler")["requests"] == 1, "the request never got upstream"
        call.cancel()  # the answer takes 2 s; the client walks away now, closing its connection
        left_at = time.time()
        with pytest.raises(asyncio.CancelledError):
            await call
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and not stub_stats(stack, "dawdler")["gone"]:
        await asyncio.sleep(0.05)
    gone = stub_stats(stack, "dawdler")["gone"]
    return gone[0] - left_at if gone else None


@pytest.mark.parametrize("backend", ["dawdler", "dawdler-local"])
async def test_client_disconnect_cancels_a_non_streamed_upstream_call_within_1s(
    stack: Stack, backend: str
) -> None:
    """Behind Serve's HAProxy ingress some disconnects of a non-streamed request never reach
    the replica (docs/resilience.md: 1 in 12 alone, more on a slow, busy CI machine; Serve's
    own proxy: none missed in 24). So: tries until three propagated, at most ten; every one
    that propagates does so within 1 s."""
    delays: list[float | None] = []
    while len(delays) < 10 and len([d for d in delays if d is not None]) < 3:
        delays.append(await _walk_away_from_a_plain_request(stack, backend))
    seen = [delay for delay in delays if delay is not None]
    print(f"{backend}: disconnect reached the upstream after {delays} s")
    assert len(seen) >= 3, delays
    assert all(delay < 1.0 for delay in seen), delays


def _abort_logged_at(log_files: list[Path], since: float) -> float | None:
    """When vLLM logged "Aborted request(s)" at or after `since` (the test stack's logging
    config stamps local time to the millisecond), from any of the files."""
    stamp = re.compile(r"(\d\d-\d\d \d\d:\d\d:\d\d)(?:[.,](\d{3}))?")
    year = time.localtime(since).tm_year
    for path in log_files:
        for line in path.read_text(errors="replace").splitlines():
            if "Aborted request" not in line or not (match := stamp.search(line)):
                continue
            when = time.mktime(time.strptime(f"{year}-{match[1]}", "%Y-%m-%d %H:%M:%S"))
            when += int(match[2] or 0) / 1000
            if when >= since:
                return when
    return None


def _abort_delay_after_leaving(stack: Stack) -> float | None:
    """Read three events of a long stream, leave; seconds until vLLM logged the abort, or
    None when it never did (the stream ran to its end)."""
    body = {
        "model": "upstream",
        "messages": HI,
        "stream": True,
        "max_tokens": 1000,  # ~3 s of tokens: the upstream server's window is 1024
        "ignore_eos": True,  # vLLM extension: generate every token unless aborted
    }
    started = time.time()
    with httpx.stream(
        "POST", f"{stack.base_url}/chat/completions", json=body, timeout=60
    ) as response:
        assert response.status_code == 200
        events = (line for line in response.iter_lines() if line)
        for _ in range(3):
            assert next(events).startswith("data: ")
        left_at = time.time()
    logs = [stack.logs / "upstream.log"]
    deadline = time.monotonic() + 8
    aborted = None
    while aborted is None and time.monotonic() < deadline:
        time.sleep(0.2)
        aborted = _abort_logged_at(logs, started)
    return None if aborted is None else aborted - left_at


def test_client_disconnect_aborts_the_vllm_request_within_1s(stack: Stack) -> None:
    """Over HTTP to vLLM's OpenAI server: the gateway closes the connection, the engine aborts
    the request and logs it. (Inside Ray Serve LLM the engine's request log is not emitted, so
    the `tiny` path is covered up to the cancelled handle call: the dawdler tests above.)

    Seven tries: at least six must abort before their ~3 s of tokens are done, and the median
    within 1 s. Late aborts (up to 1.2 s here) come from two cores starved by the generating
    engine (an ingress health check sat unread 0.5 s). A try that never aborts is rarer and not
    explained: in about 1 try in 20 under the whole suite the client's disconnect does not
    reach the ingress replica from Serve's HAProxy at all, and the engine finishes the stream
    (the request is still recorded). Not fixed; see docs/resilience.md."""
    delays = [_abort_delay_after_leaving(stack) for _ in range(7)]
    aborted = [delay for delay in delays if delay is not None]
    assert len(aborted) >= 6, delays
    assert statistics.median(aborted) < 1.0, delays


@pytest.mark.destructive
async def test_vllm_replica_killed_under_load_loses_no_plain_request(stack: Stack) -> None:
    import ray
    from ray import serve

    deployment = serve.status().applications["gateway"].deployments["backend-tiny"]
    assert deployment.replica_states  # the engine replica is up
    actors = [
        actor
        for actor in ray.util.list_named_actors(all_namespaces=True)
        if "backend-tiny" in actor["name"] and "SERVE_REPLICA" in actor["name"]
    ]
    assert len(actors) == 1, actors
    replica = ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"])
    client = openai.AsyncOpenAI(base_url=stack.base_url, api_key="unused", max_retries=0)
    results: list[str] = []

    async def one(index: int) -> None:
        try:
            raw = await client.chat.completions.with_raw_response.create(
                model="engine-then-upstream",
                messages=[{"role": "user", "content": f"count {index}"}],
                max_tokens=160,
                temperature=random.random(),
            )
            raw.parse()
            results.append(raw.headers["x-gateway-backend"])
        except Exception as exc:
            results.append(f"FAILED {exc!r}")

    tasks = [asyncio.create_task(one(i)) for i in range(40)]
    await asyncio.sleep(1.0)  # requests are in flight on the engine
    assert not all(task.done() for task in tasks)
    ray.kill(replica, no_restart=False)
    await asyncio.gather(*tasks)
    await client.close()
    failed = [r for r in results if r.startswith("FAILED")]
    assert failed == [] and len(results) == 40
    assert "upstream" in results  # the kill landed: in-flight requests moved to the fallback
