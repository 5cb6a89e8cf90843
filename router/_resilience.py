"""Circuit breakers and retry backoff: pure state machines, the clock passed in by the caller."""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass
from typing import Literal

CircuitState = Literal["closed", "open", "half_open"]


@dataclass(frozen=True, slots=True)
class BreakerSettings:
    """When a backend's circuit opens, and for how long.

    It opens after `consecutive_failures` failures in a row, or when at least `min_requests`
    of the last `window` outcomes are known and `error_rate` of them failed. After
    `cooldown_s` one probe request is let through (half-open): success closes the circuit,
    failure opens it again.
    """

    enabled: bool = True
    consecutive_failures: int = 5
    error_rate: float = 0.5
    window: int = 20
    min_requests: int = 10
    cooldown_s: float = 30.0


class CircuitBreaker:
    """One backend's breaker. Not thread-safe: one per event loop (ingress replica)."""

    def __init__(self, settings: BreakerSettings) -> None:
        self.settings = settings
        self._state: CircuitState = "closed"
        self._consecutive = 0
        self._outcomes: deque[bool] = deque(maxlen=settings.window)  # True: failure
        self._failures_in_window = 0
        self._opened_at = 0.0
        self._cooldown_s = settings.cooldown_s
        self._probe_in_flight = False
        self.reason = ""
        self.opened_count = 0

    def state(self, now: float) -> CircuitState:
        if self._state == "open" and now - self._opened_at >= self._cooldown_s:
            return "half_open"
        return self._state

    def retry_after_s(self, now: float) -> float:
        """Seconds until a probe may pass; 0 when the circuit lets requests through."""
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self._cooldown_s - now)

    def allows(self, now: float) -> bool:
        """Whether a request may go to the backend now, without taking the probe slot."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self._probe_in_flight)

    def acquire(self, now: float) -> bool:
        """Take permission for one request; in half-open state only one probe at a time."""
        if not self.settings.enabled:
            return True
        state = self.state(now)
        if state == "closed":
            return True
        if state == "half_open" and not self._probe_in_flight:
            self._state = "half_open"
            self._probe_in_flight = True
            return True
        return False

    def release(self) -> None:
        """The probe ended without an outcome that says anything about the backend."""
        self._probe_in_flight = False

    def record_success(self) -> None:
        self._probe_in_flight = False
        self._consecutive = 0
        self._push(False)
        if self._state != "closed":
            self._state = "closed"
            self._outcomes.clear()
            self._failures_in_window = 0
            self.reason = ""

    def record_failure(self, now: float, why: str = "") -> None:
        self._probe_in_flight = False
        self._consecutive += 1
        self._push(True)
        if not self.settings.enabled:
            return
        s = self.settings
        if self._state == "half_open":
            self.trip(now, f"half-open probe failed: {why}" if why else "half-open probe failed")
        elif self._state == "closed" and self._consecutive >= s.consecutive_failures:
            self.trip(now, f"{self._consecutive} consecutive failures (last: {why or 'error'})")
        elif (
            self._state == "closed"
            and len(self._outcomes) >= s.min_requests
            and self._failures_in_window / len(self._outcomes) >= s.error_rate
        ):
            rate = self._failures_in_window / len(self._outcomes)
            self.trip(now, f"error rate {rate:.0%} over the last {len(self._outcomes)} requests")

    def trip(self, now: float, reason: str, cooldown_s: float | None = None) -> None:
        """Open the circuit now (also used for failures that need no counting, e.g. a key
        the provider rejects)."""
        self._state = "open"
        self._opened_at = now
        self._cooldown_s = self.settings.cooldown_s if cooldown_s is None else cooldown_s
        self._probe_in_flight = False
        self.reason = reason
        self.opened_count += 1

    def _push(self, failed: bool) -> None:
        if len(self._outcomes) == self._outcomes.maxlen and self._outcomes[0]:
            self._failures_in_window -= 1
        self._outcomes.append(failed)
        self._failures_in_window += failed

    def describe(self, now: float) -> dict[str, object]:
        total = len(self._outcomes)
        return {
            "state": self.state(now),
            "reason": self.reason or None,
            "retry_after_s": round(self.retry_after_s(now), 1),
            "consecutive_failures": self._consecutive,
            "recent_error_rate": round(self._failures_in_window / total, 3) if total else None,
            "times_opened": self.opened_count,
        }


@dataclass(frozen=True, slots=True)
class RetrySettings:
    """How often and how patiently a failed request is tried on the same backend again."""

    max_retries: int = 2
    initial_backoff_s: float = 0.1
    max_backoff_s: float = 5.0
    max_retry_after_s: float = 10.0


def retry_delay(
    settings: RetrySettings, retry: int, retry_after_s: float | None, rng: random.Random
) -> float | None:
    """Seconds to wait before retry number `retry` (1-based), or None not to retry.

    Full-jitter exponential backoff (uniform in 0..min(cap, initial * 2**(retry-1))), but never
    sooner than the upstream's `Retry-After`; a Retry-After longer than `max_retry_after_s`
    means "not worth waiting for": no retry, the client hears it instead.
    """
    if retry > settings.max_retries:
        return None
    if retry_after_s is not None and retry_after_s > settings.max_retry_after_s:
        return None
    ceiling = min(settings.max_backoff_s, settings.initial_backoff_s * 2 ** (retry - 1))
    delay = rng.uniform(0, ceiling)
    return max(delay, retry_after_s or 0.0)
