"""The one feedback channel: every call to a backend is an `Attempt`, and every finished
request a record. Observers (live stats, health, circuit breakers, accounting) subscribe here
and nowhere else, so what they count cannot drift apart.

```python
async with feedback.attempt("smollm2", record, streamed=False) as attempt:
    result = await backend.complete(endpoint, body)
    attempt.answered(tokens=result["usage"]["completion_tokens"])
```
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType

from deployments import UPSTREAM_HEADERS, BackendError
from llmops import RequestRecord
from tracing import Span, Trace

logger = logging.getLogger("ray.serve")


@dataclass(slots=True)
class AttemptOutcome:
    """How one call to one backend went."""

    backend: str
    streamed: bool
    started: float
    first_byte: float | None = None  # first chunk of a stream, or the whole answer
    ended: float | None = None
    tokens: int | None = None  # output tokens, when known
    error: BackendError | None = None
    # Ended without a verdict on the backend: the client left, the caller gave up, or a bug
    # of ours. Neither a success nor a failure.
    cancelled: bool = False
    # Sent while the backend had no running replica: its latency includes a cold start, which
    # says nothing of the backend's speed once up (the cold-start ETA is learned apart).
    cold: bool = False

    @property
    def succeeded(self) -> bool:
        return self.error is None and not self.cancelled


class Observer:
    """Subscriber to the feedback channel; override what you need. Calls must not block,
    but `close`, called once when the gateway closes, in a thread of its own."""

    def attempt_started(self, backend: str) -> None:
        """A call to `backend` begins."""

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        """The call ended (exactly once per start)."""

    def request_finished(self, record: RequestRecord) -> None:
        """A request is over: answered, failed, or abandoned by its client."""

    def close(self) -> None:
        """Nothing more comes: write what is queued (blocking)."""


class Attempt:
    """One call to one backend; an async context manager that reports its start and end.

    An exception leaving the block decides the outcome: a `BackendError` is a failure,
    cancellation (or any other exception) ends without a verdict. `fail` records a failure
    the caller handled itself (an error event sent mid-stream)."""

    __slots__ = ("_feedback", "_record", "_relay", "_span", "outcome")

    def __init__(
        self, feedback: Feedback, backend: str, streamed: bool, record: RequestRecord | None
    ) -> None:
        self._feedback = feedback
        self._record = record
        self.outcome = AttemptOutcome(backend, streamed, started=0.0)
        self._span: Span | None = None  # the request is traced: this call's span
        self._relay: Span | None = None  # and, streamed, the relay's from the first chunk

    async def __aenter__(self) -> Attempt:
        self.outcome.started = self._feedback.clock()
        record = self._record
        if record is not None:
            record.attempts.append(self.outcome.backend)
            record.backend = self.outcome.backend
            if record.trace is not None:
                self._span = record.trace.attempt(self.outcome.backend, len(record.attempts))
                # The upstream's spans (vLLM's, a provider's) join the trace under this one.
                UPSTREAM_HEADERS.set({"traceparent": record.trace.traceparent(self._span)})
        self._feedback.attempt_started(self.outcome.backend)
        return self

    def first_byte(self) -> None:
        self.outcome.first_byte = self._feedback.clock()
        trace = self._record.trace if self._record is not None else None
        if trace is not None and self._span is not None and self.outcome.streamed:
            self._relay = trace.begin("gateway.relay", parent=self._span)

    def answered(self, tokens: int | None) -> None:
        """A non-streamed answer arrived."""
        self.outcome.first_byte = self._feedback.clock()
        self.outcome.tokens = tokens

    def fail(self, error: BackendError) -> None:
        self.outcome.error = error

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        outcome = self.outcome
        if isinstance(exc, BackendError):
            outcome.error = exc
        elif exc is not None:
            outcome.cancelled = True
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                logger.error("attempt on %s ended by %r", outcome.backend, exc)
        outcome.ended = self._feedback.clock()
        if self._span is not None:
            self._end_spans(outcome)
        self._feedback.attempt_ended(outcome)

    def _end_spans(self, outcome: AttemptOutcome) -> None:
        error = outcome.error.code or outcome.error.type if outcome.error is not None else None
        if outcome.cancelled and error is None:
            error = "cancelled"
        for span in (self._relay, self._span):
            if span is not None:
                Trace.end(span, error)
        assert self._span is not None
        if outcome.tokens is not None:
            self._span.attributes["gen_ai.usage.output_tokens"] = outcome.tokens
        if outcome.cold:
            self._span.attributes["gateway.cold_start"] = True


class Feedback:
    """Fans attempt and request events out to the observers, in order. An observer that
    raises is logged and skipped: bookkeeping never fails a request."""

    def __init__(
        self, observers: Sequence[Observer] = (), clock: Callable[[], float] = time.perf_counter
    ) -> None:
        self.observers = list(observers)
        self.clock = clock

    def attempt(
        self, backend: str, record: RequestRecord | None = None, *, streamed: bool
    ) -> Attempt:
        return Attempt(self, backend, streamed, record)

    def attempt_started(self, backend: str) -> None:
        self._each(lambda observer: observer.attempt_started(backend))

    def attempt_ended(self, outcome: AttemptOutcome) -> None:
        self._each(lambda observer: observer.attempt_ended(outcome))

    def request_finished(self, record: RequestRecord) -> None:
        self._each(lambda observer: observer.request_finished(record))

    def _each(self, call: Callable[[Observer], None]) -> None:
        for observer in self.observers:
            try:
                call(observer)
            except Exception:
                logger.exception("%s failed on the feedback channel", type(observer).__name__)
