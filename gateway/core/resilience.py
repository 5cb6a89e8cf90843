"""Timeouts, retries with backoff, fallbacks and circuit breakers around backend calls.

The state machines are the router's (pure); this module runs them on the event loop. The
breakers learn each attempt's outcome from the feedback channel (`Resilience` is an observer);
the attempt loop only asks them for permission.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from deployments import BackendConfig, BackendError, CredentialsRejected, Recovery
from gateway.core.attempts import AttemptOutcome, Observer
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

logger = logging.getLogger("ray.serve")
T = TypeVar("T")

# A provider that rejects our key stays out of rotation at least this long.
AUTH_FAILURE_COOLDOWN_S = 60.0


@dataclass(frozen=True, slots=True)
class Limits:
    """Timeouts for one attempt on one backend."""

    first_token_s: float
    total_s: float


class BackendGuard:
    """One backend's breaker, retry settings and timeouts."""

    def __init__(self, name: str, config: BackendConfig) -> None:
        self.name = name
        cb, retry = config.circuit_breaker, config.retry
        self.breaker = CircuitBreaker(
            BreakerSettings(
                enabled=cb.enabled,
                consecutive_failures=cb.consecutive_failures,
                error_rate=cb.error_rate,
                window=cb.window,
                min_requests=cb.min_requests,
                cooldown_s=cb.cooldown_s,
            )
        )
        self.retry = RetrySettings(
            max_retries=retry.max_retries,
            initial_backoff_s=retry.initial_backoff_ms / 1000,
            max_backoff_s=retry.max_backoff_ms / 1000,
            max_retry_after_s=retry.max_retry_after_s,
        )
        self.limits = Limits(config.timeouts.first_token_s, config.timeouts.total_s)
        self.retries = 0
        self.failures = 0


def timeout_error(name: str, what: str, seconds: float) -> BackendError:
    return BackendError(
        f"backend {name!r} timed out waiting for {what} ({seconds:g} s)",
        status=504,
        type="timeout_error",
        code="upstream_timeout",
    )


class Resilience(Observer):
    """Per ingress replica: guards for every backend, and the attempt loop."""

    def __init__(self, backends: Mapping[str, BackendConfig], seed: int | None = None) -> None:
        self.guards = {name: BackendGuard(name, config) for name, config in backends.items()}
        self._not_closed: set[str] = set()
        self._rng = random.Random(seed)

    # ---- what the router sees ----------------------------------------------------------------

    def overlay(self, availability: Mapping[str, Availability]) -> Mapping[str, Availability]:
        """Availability with open circuits marked down (definitely: never a last resort)."""
        if not self._not_closed:
            return availability
        now = time.monotonic()
        result = dict(availability)
        for name in list(self._not_closed):
            breaker = self.guards[name].breaker
            state = breaker.state(now)
            if state == "closed":
                self._not_closed.discard(name)
            elif not breaker.allows(now):
                wait = breaker.retry_after_s(now) or 1.0
                reason = f"circuit {state.replace('_', '-')}: {breaker.reason}"
                result[name] = Availability(False, reason, definite=True, retry_after_s=wait)
        return result

    def describe(self, name: str) -> dict[str, Any]:
        guard = self.guards[name]
        return {
            **guard.breaker.describe(time.monotonic()),
            "retries": guard.retries,
            "failures": guard.failures,
        }

    # ---- outcomes (from the feedback channel) ----------------------------------------------------

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        if outcome.error is not None:
            self.record_failure(outcome.backend, outcome.error)
        elif outcome.cancelled:
            self.guards[outcome.backend].breaker.release()  # no verdict on the backend
        else:
            self.guards[outcome.backend].breaker.record_success()

    def record_failure(self, name: str, exc: BackendError) -> None:
        guard, now = self.guards[name], time.monotonic()
        if isinstance(exc, CredentialsRejected):
            cooldown = max(guard.breaker.settings.cooldown_s, AUTH_FAILURE_COOLDOWN_S)
            guard.breaker.trip(now, "the provider rejected the credentials", cooldown)
        elif exc.status >= 500:
            guard.failures += 1
            guard.breaker.record_failure(now, exc.code or f"HTTP {exc.status}")
        elif exc.status == 429:
            guard.breaker.release()  # overload says nothing about health
        else:
            guard.breaker.record_success()  # it answered: the request was the problem
        if guard.breaker.state(now) != "closed":
            self._not_closed.add(name)

    # ---- the attempt loop ------------------------------------------------------------------

    def limits(self, name: str, route: RouteConfig | None) -> Limits:
        limits = self.guards[name].limits
        if route is None:
            return limits
        return Limits(
            route.first_token_timeout_s or limits.first_token_s,
            route.total_timeout_s or limits.total_s,
        )

    async def first_success(
        self,
        decision: Decision,
        route: RouteConfig | None,
        headers: dict[str, str],
        attempt: Callable[[str, Limits], Awaitable[T]],
    ) -> T:
        """Try the decision's backends in order (no waiting), then retry those whose failure
        another try may mend, after a jittered backoff. A client error (4xx) ends it at once.

        `attempt` must report its outcome through the feedback channel (which frees the
        breaker's probe slot taken here), whatever happens."""
        max_attempts = route.max_attempts if route is not None else None
        made, tries = 0, dict.fromkeys(decision.attempts, 0)
        last_error: BackendError | None = None
        skipped: dict[str, str] = {}
        queue: list[tuple[float, str]] = [(0.0, name) for name in decision.attempts]
        while queue:
            ready_at, name = queue.pop(0)
            if max_attempts is not None and made >= max_attempts:
                break
            delay = ready_at - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            guard = self.guards[name]
            if not guard.breaker.acquire(time.monotonic()):
                skipped[name] = f"circuit open: {guard.breaker.reason}"
                self._not_closed.add(name)
                continue
            made += 1
            tries[name] += 1
            if tries[name] > 1:
                guard.retries += 1
            headers["x-gateway-backend"] = name
            try:
                result = await attempt(name, self.limits(name, route))
            except BackendError as exc:
                last_error = exc
                if exc.recovery is Recovery.NONE:
                    raise
                logger.warning("backend %s failed (%s: %s)", name, exc.code, exc.message)
                wait = None
                if exc.recovery is Recovery.RETRY:
                    wait = retry_delay(guard.retry, tries[name], exc.retry_after_s, self._rng)
                if wait is not None:
                    queue.append((time.monotonic() + wait, name))
                    queue.sort()
                continue
            if made > 1:
                headers["x-gateway-attempts"] = str(made)
            return result
        if last_error is not None:
            raise last_error
        waits = [self.guards[n].breaker.retry_after_s(time.monotonic()) for n in skipped]
        raise NoBackendAvailable(
            decision.route or decision.chosen, skipped, min(waits) if waits else None
        )
