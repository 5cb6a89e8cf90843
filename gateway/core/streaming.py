"""Streamed answers: the first attempt that starts streaming (fallbacks and retries before any
byte reached the client), and, on a route with `resume_streams`, the rest of an answer whose
backend broke mid-way, from the next backend of the decision (`gateway.core.continuation`)."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

from deployments import BackendError
from gateway.core.answers import Calls, note_answer
from gateway.core.continuation import Continuation, Segment, Sent, Style, continued_body
from gateway.core.front import Native
from gateway.core.relay import ChatWire, StreamBroken, relay
from gateway.core.replies import StreamReply
from gateway.core.resilience import Limits
from gateway.core.routing import Routed
from llmops import RequestRecord
from router import Decision, RouteConfig

logger = logging.getLogger("ray.serve")
RESUMABLE = ("chat/completions", "completions")


@dataclasses.dataclass(slots=True)
class _Request:
    """One streamed request, as its attempts need it."""

    routed: Routed
    headers: dict[str, str]
    record: RequestRecord
    route: RouteConfig | None
    native_for: Callable[[str], Native | None]
    strip_usage: bool
    resumable: bool


class Streams:
    """Starts streams on the gateway's backends, and continues the ones that break."""

    def __init__(self, calls: Calls, styles: Mapping[str, Style]) -> None:
        self.calls = calls
        self.styles = dict(styles)

    async def open(
        self,
        routed: Routed,
        headers: dict[str, str],
        record: RequestRecord,
        route: RouteConfig | None,
        native_for: Callable[[str], Native | None],
        *,
        resume: bool,
    ) -> StreamReply:
        # The ledger needs the stream's usage: ask for it, and drop it if the client did not.
        options = routed.body.get("stream_options") or {}
        resumable = resume and route is not None and route.resume_streams
        request = _Request(
            routed, headers, record, route, native_for, not options.get("include_usage"),
            resumable and routed.prepared.endpoint in RESUMABLE,
        )  # fmt: skip
        body_for = routed.body_for
        first, rest, native = await self.calls.resilience.first_success(
            routed.decision, route, headers, self._attempt(request, body_for)
        )
        if request.resumable and not native:
            rest = self._resuming(request, first, rest)
        finish = lambda: self.calls.feedback.request_finished(record)  # noqa: E731
        return StreamReply(headers, first, rest, finish, native=native)

    def explain(self, decision: Decision, route: RouteConfig | None) -> dict[str, Any]:
        """What explain says of a stream breaking mid-answer: whether it is continued, and
        by which backends, in order, each in its way (`prefill`, `assistant_prefill`,
        `prompt`)."""
        resume = route is not None and route.resume_streams
        then = decision.attempts[1:] if resume else ()
        return {
            "resume_streams": resume,
            "continued_by": [
                {"backend": name, "mode": self.styles.get(name, Style.PROMPT).value}
                for name in then
            ],
        }

    def _attempt(self, request: _Request, body_for: Callable[[str], dict[str, Any]]) -> Any:
        endpoint = request.routed.prepared.endpoint
        options = request.routed.body.get("stream_options") or {}
        with_usage = (
            {"stream_options": {**options, "include_usage": True}} if request.strip_usage else {}
        )

        async def attempt(name: str, limits: Limits) -> tuple[bytes, AsyncIterator[bytes], bool]:
            native = request.native_for(name)
            if native is None:
                chunks = self.calls.backends[name].stream(endpoint, body_for(name) | with_usage)
            else:
                chunks = self.calls.backends[name].stream(native.api.endpoint, native.body)
            wire = ChatWire(request.strip_usage) if native is None else native.api.wire()
            attempt = self.calls.feedback.attempt(name, request.record, streamed=True)
            attempt.outcome.cold = self.calls.cold(name)
            resumable = request.resumable and native is None
            events = relay(attempt, chunks, limits, request.record, wire, resumable)
            try:
                # The first chunk before answering: a backend failing early still yields a
                # proper HTTP status, or falls back invisibly.
                first = await anext(events)
            except BaseException:
                await events.aclose()  # type: ignore[attr-defined]
                raise
            return first, events, native is not None

        return attempt

    async def _resuming(
        self, request: _Request, first: bytes, rest: AsyncIterator[bytes]
    ) -> AsyncIterator[bytes]:
        """`rest`, then the rest of the answer from the next backends while one breaks."""
        record, body = request.record, request.routed.body
        sent = Sent(request.routed.prepared.endpoint)
        sent.observe(first)
        done: list[Continuation] = []
        billed = [0, 0]  # prompt, completion tokens of the backends that broke
        segment: Segment | None = None
        events = rest
        try:
            while True:
                try:
                    async for chunk in events:
                        ready = sent_through(sent, segment, chunk)
                        if ready:
                            yield ready
                    return
                except StreamBroken as broken:
                    why = sent.settle().why_not(body) or self._nothing_left(request, broken.backend)
                    if why is not None:  # the broken backend stays the record's own
                        yield self._give_up(request, broken.error, why)
                        return
                    record.billed_elsewhere.append(self._bill(broken, sent, record, billed))
                    try:
                        segment, events, head = await self._continue(
                            request, broken.backend, sent, done, billed
                        )
                    except BackendError as exc:
                        yield self._give_up(request, exc, "no backend continued it")
                        return
                    if head:
                        yield head
        finally:
            await events.aclose()  # type: ignore[attr-defined]
            if done:
                self._totals(record, billed)
            sent.settle()  # the client has had the last event: reading it delays nothing
            note_answer(record, sent.text, sent.finish_reason, self.calls.refusals)

    def _bill(
        self, broken: StreamBroken, sent: Sent, record: RequestRecord, billed: list[int]
    ) -> tuple[str, int, int]:
        """What the broken backend billed: its prompt (the router's count, and the text it
        continued from) and the tokens it streamed."""
        streamed = sent.tokens - billed[1]
        prompt = (record.estimated_prompt_tokens or 0) + billed[1]
        billed[0] += prompt
        billed[1] += streamed
        return broken.backend, prompt, streamed

    def _nothing_left(self, request: _Request, broke: str) -> str | None:
        if not self._after(request, broke):
            return "no backend is left to continue it"
        return None

    @staticmethod
    def _after(request: _Request, broke: str) -> tuple[str, ...]:
        attempts = request.routed.decision.attempts
        return attempts[attempts.index(broke) + 1 :] if broke in attempts else ()

    async def _continue(
        self,
        request: _Request,
        broke: str,
        sent: Sent,
        done: list[Continuation],
        billed: list[int],
    ) -> tuple[Segment, AsyncIterator[bytes], bytes]:
        """The next backend's stream of the rest of the answer, its first events rewritten."""
        routed, endpoint = request.routed, request.routed.prepared.endpoint
        decision = dataclasses.replace(routed.decision, attempts=self._after(request, broke))

        def body_for(name: str) -> dict[str, Any]:
            style = self.styles.get(name, Style.PROMPT)
            return continued_body(endpoint, routed.body_for(name), sent, style)

        no_native = dataclasses.replace(request, native_for=lambda name: None)
        first, events, _ = await self.calls.resilience.first_success(
            decision, request.route, {}, self._attempt(no_native, body_for)
        )
        to = request.record.backend or decision.attempts[0]
        done.append(Continuation(broke, to, sent.tokens, self.styles.get(to, Style.PROMPT)))
        request.record.continued_from = done[0].broke
        logger.warning("stream from %s continued on %s after %d tokens", broke, to, sent.tokens)
        segment = Segment(sent, done, (billed[0], billed[1]), done[-1].style)
        return segment, events, segment(first)

    def _give_up(self, request: _Request, error: BackendError, why: str) -> bytes:
        logger.warning("a broken stream is not continued: %s", why)
        request.record.fail(error.status, error.code or "stream_broken")
        return ChatWire(request.strip_usage).error(error)

    @staticmethod
    def _totals(record: RequestRecord, billed: list[int]) -> None:
        """The record counts every backend's tokens (its cost: `Accounting`)."""
        if record.prompt_tokens is None:  # the last backend sent no usage: estimated
            record.prompt_tokens = (record.estimated_prompt_tokens or 0) + billed[1]
            record.usage_source = "estimated"
        record.prompt_tokens += billed[0]
        record.completion_tokens = (record.completion_tokens or 0) + billed[1]


def sent_through(sent: Sent, segment: Segment | None, chunk: bytes) -> bytes:
    """A chunk of the first backend (observed as it goes) or of a continuing one (rewritten)."""
    if segment is None:
        sent.observe(chunk)
        return chunk
    return segment(chunk)
