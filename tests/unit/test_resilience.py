"""Circuit breakers, retry backoff and the attempt loop, with a scripted clock and backends."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator

import pytest

from deployments import BackendError, CredentialsRejected, FakeBackendConfig, Recovery
from gateway.core.attempts import AttemptOutcome, Feedback, Observer
from gateway.core.relay import ChatWire, relay
from gateway.core.resilience import Limits, Resilience
from llmops import RequestRecord
from router import (
    Availability,
    BreakerSettings,
    CircuitBreaker,
    Decision,
    NoBackendAvailable,
    RetrySettings,
    RouteConfig,
    retry_delay,
)

# ---- circuit breaker ------------------------------------------------------------------------


def test_breaker_opens_after_consecutive_failures_and_probes_after_cooldown() -> None:
    breaker = CircuitBreaker(BreakerSettings(consecutive_failures=3, cooldown_s=10))
    for _ in range(2):
        breaker.record_failure(0.0, "boom")
    assert breaker.state(0.0) == "closed"
    breaker.record_failure(1.0, "boom")
    assert breaker.state(1.0) == "open"
    assert not breaker.acquire(5.0)
    assert breaker.retry_after_s(5.0) == pytest.approx(6.0)
    assert breaker.state(11.0) == "half_open"
    assert breaker.acquire(11.0)  # the one probe
    assert not breaker.acquire(11.0)  # no second probe while it runs
    breaker.record_success()
    assert breaker.state(11.0) == "closed"
    assert breaker.acquire(11.0)


def test_failed_probe_reopens_for_another_cooldown() -> None:
    breaker = CircuitBreaker(BreakerSettings(consecutive_failures=1, cooldown_s=10))
    breaker.record_failure(0.0)
    assert breaker.acquire(10.0)
    breaker.record_failure(10.0, "still down")
    assert breaker.state(15.0) == "open"
    assert "probe failed" in breaker.reason
    assert breaker.state(20.0) == "half_open"


def test_breaker_opens_on_error_rate_without_consecutive_failures() -> None:
    settings = BreakerSettings(consecutive_failures=100, error_rate=0.5, window=10, min_requests=10)
    breaker = CircuitBreaker(settings)
    for index in range(9):
        breaker.record_success() if index % 2 else breaker.record_failure(0.0)
    assert breaker.state(0.0) == "closed"  # 9 outcomes: below min_requests
    breaker.record_success()
    breaker.record_failure(0.0)  # window now holds 5 failures of 10
    assert breaker.state(0.0) == "open"
    assert "error rate 50%" in breaker.reason


def test_success_resets_consecutive_failures_and_disabled_breaker_never_opens() -> None:
    breaker = CircuitBreaker(BreakerSettings(consecutive_failures=2, min_requests=100))
    breaker.record_failure(0.0)
    breaker.record_success()
    breaker.record_failure(0.0)
    assert breaker.state(0.0) == "closed"
    disabled = CircuitBreaker(BreakerSettings(enabled=False, consecutive_failures=1))
    for _ in range(10):
        disabled.record_failure(0.0)
    assert disabled.state(0.0) == "closed" and disabled.acquire(0.0)


# ---- backoff --------------------------------------------------------------------------------


def test_retry_delay_is_jittered_exponential_and_honours_retry_after() -> None:
    settings = RetrySettings(max_retries=3, initial_backoff_s=0.1, max_backoff_s=0.3)
    rng = random.Random(1)
    firsts = [retry_delay(settings, 1, None, rng) for _ in range(200)]
    thirds = [retry_delay(settings, 3, None, rng) for _ in range(200)]
    assert all(d is not None and 0 <= d <= 0.1 for d in firsts)
    assert all(d is not None and 0 <= d <= 0.3 for d in thirds)  # capped, not 0.4
    assert len({round(d or 0, 6) for d in firsts}) > 100  # jittered, not fixed
    assert max(d or 0 for d in thirds) > 0.2
    assert retry_delay(settings, 1, 2.0, rng) == 2.0  # never sooner than Retry-After
    assert retry_delay(settings, 4, None, rng) is None  # out of retries
    assert retry_delay(settings, 1, 60.0, rng) is None  # too long to wait: tell the client


# ---- the attempt loop -----------------------------------------------------------------------


def _resilience(**breaker: object) -> Resilience:
    def fake(name: str) -> FakeBackendConfig:
        return FakeBackendConfig.model_validate(
            {
                "kind": "fake",
                "model": name,
                "retry": {"max_retries": 2, "initial_backoff_ms": 1, "max_backoff_ms": 2},
                "circuit_breaker": {"consecutive_failures": 3, "cooldown_s": 30, **breaker},
            }
        )

    return Resilience({name: fake(name) for name in ("a", "b")}, seed=0)


def _decision(*attempts: str) -> Decision:
    return Decision(route="r", policy="ordered", chosen=attempts[0], attempts=attempts)


class Script:
    """Backends that fail with the given errors in turn, then answer with their name; each
    call is an attempt on the feedback channel, which the breakers (the Resilience) hear."""

    def __init__(self, failures: dict[str, list[BackendError]]) -> None:
        self.failures = failures
        self.calls: list[str] = []
        self.feedback: Feedback | None = None

    def on(self, resilience: Resilience) -> Script:
        self.feedback = Feedback([resilience])
        return self

    async def __call__(self, name: str, limits: Limits) -> str:
        assert self.feedback is not None, "call .on(resilience) first"
        self.calls.append(name)
        async with self.feedback.attempt(name, streamed=False):
            if self.failures.get(name):
                raise self.failures[name].pop(0)
        return name


def _down(status: int = 502, **kwargs: object) -> BackendError:
    return BackendError("down", status=status, **kwargs)  # type: ignore[arg-type]


async def test_fallbacks_are_tried_before_retrying_with_backoff() -> None:
    script = Script({"a": [_down()], "b": [_down()]})
    headers: dict[str, str] = {}
    resilience = _resilience()
    result = await resilience.first_success(
        _decision("a", "b"), None, headers, script.on(resilience)
    )
    assert script.calls[:2] == ["a", "b"]  # the fallback first, without waiting
    assert len(script.calls) == 3 and result == script.calls[2]  # then a retry after backoff
    assert headers["x-gateway-backend"] == result and headers["x-gateway-attempts"] == "3"


async def test_client_error_ends_the_search_at_once() -> None:
    refused = BackendError("bad request", status=400, recovery=Recovery.NONE)
    resilience = _resilience()
    script = Script({"a": [refused]}).on(resilience)
    with pytest.raises(BackendError) as caught:
        await resilience.first_success(_decision("a", "b"), None, {}, script)
    assert caught.value is refused and script.calls == ["a"]


async def test_route_max_attempts_bounds_fallbacks_and_retries() -> None:
    script = Script({"a": [_down()] * 5, "b": [_down()] * 5})
    route = RouteConfig(candidates=("a",), fallbacks=("b",), max_attempts=3)
    resilience = _resilience()
    with pytest.raises(BackendError):
        await resilience.first_success(_decision("a", "b"), route, {}, script.on(resilience))
    assert len(script.calls) == 3


async def test_open_circuit_makes_backend_definitely_unavailable_with_retry_after() -> None:
    resilience = _resilience()
    script = Script({"a": [_down()] * 10}).on(resilience)
    with pytest.raises(BackendError):
        await resilience.first_success(_decision("a"), None, {}, script)
    assert script.calls == ["a", "a", "a"]  # 1 + 2 retries; the third failure opens it
    view = resilience.overlay({"a": Availability(), "b": Availability()})
    assert view["b"].available
    assert not view["a"].available and view["a"].definite
    assert "circuit open" in view["a"].reason and "3 consecutive failures" in view["a"].reason
    assert 29 < (view["a"].retry_after_s or 0) <= 30
    assert resilience.describe("a")["state"] == "open"
    with pytest.raises(NoBackendAvailable) as caught:  # nothing tried: no hang, a wait hint
        await resilience.first_success(_decision("a"), None, {}, script)
    assert (caught.value.retry_after_s or 0) > 29 and script.calls == ["a"] * 3


async def test_rate_limits_do_not_open_the_circuit_and_auth_failures_do() -> None:
    resilience = _resilience()
    limited = [_down(429, retry_after_s=0.001) for _ in range(9)]
    with pytest.raises(BackendError):
        await resilience.first_success(
            _decision("a"), None, {}, Script({"a": limited}).on(resilience)
        )
    assert resilience.describe("a")["state"] == "closed"
    auth = CredentialsRejected("rejected", status=502, code="backend_auth_failed")
    script = Script({"b": [auth]}).on(resilience)
    with pytest.raises(BackendError):
        await resilience.first_success(_decision("b"), None, {}, script)
    assert script.calls == ["b"]  # never retried on the same backend
    assert resilience.describe("b")["state"] == "open"
    assert "credentials" in str(resilience.describe("b")["reason"])


async def test_long_retry_after_is_not_waited_for() -> None:
    resilience = _resilience()
    script = Script({"a": [_down(429, retry_after_s=120)]}).on(resilience)
    started = time.monotonic()
    with pytest.raises(BackendError) as caught:
        await resilience.first_success(_decision("a"), None, {}, script)
    assert time.monotonic() - started < 0.5
    assert caught.value.retry_after_s == 120 and script.calls == ["a"]


async def test_cancelled_probe_frees_the_half_open_slot() -> None:
    resilience = _resilience(cooldown_s=0.01)
    with pytest.raises(BackendError):
        await resilience.first_success(
            _decision("a"), None, {}, Script({"a": [_down()] * 3}).on(resilience)
        )
    await asyncio.sleep(0.02)
    feedback = Feedback([resilience])

    async def hang(name: str, limits: Limits) -> str:
        async with feedback.attempt(name, streamed=False):
            await asyncio.sleep(10)
        return name

    task = asyncio.create_task(resilience.first_success(_decision("a"), None, {}, hang))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert resilience.guards["a"].breaker.acquire(time.monotonic())


# ---- the stream relay's total deadline --------------------------------------------------------


class Outcomes(Observer):
    def __init__(self) -> None:
        self.ended: list[AttemptOutcome] = []

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        self.ended.append(outcome)


async def test_stream_past_its_total_timeout_ends_with_an_error_event() -> None:
    closed = asyncio.Event()

    async def slow() -> AsyncIterator[bytes]:
        try:
            yield b"data: {}\n\n"
            for index in range(100):
                await asyncio.sleep(0.05)
                yield f'data: {{"n": {index}}}\n\n'.encode()
        finally:
            closed.set()

    outcomes = Outcomes()
    record = RequestRecord("r", "chat/completions", True)
    attempt = Feedback([outcomes]).attempt("a", record, streamed=True)
    chunks = [
        chunk async for chunk in relay(attempt, slow(), Limits(1, 0.2), record, ChatWire(False))
    ]
    assert 2 <= len(chunks) <= 6
    assert b"upstream_timeout" in chunks[-1] and chunks[-1].endswith(b"data: [DONE]\n\n")
    (outcome,) = outcomes.ended  # one attempt, ended once, as a failure
    assert outcome.error is not None and outcome.error.status == 504
    assert closed.is_set() and record.status == 504
