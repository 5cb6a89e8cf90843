"""Whole (unstreamed) answers: the first backend of the decision that answers, with fallbacks
and retries, within its total timeout; the usage and cost of the answer on the record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from deployments import Backend
from gateway.core.attempts import Feedback
from gateway.core.front import Native
from gateway.core.replies import Reply
from gateway.core.resilience import Limits, Resilience, timeout_error
from gateway.core.routing import Routed
from llmops import RequestRecord, answer_signals, response_text
from router import RouteConfig


def finish_reason(result: dict[str, Any]) -> str | None:
    """How a whole answer ended: a choice's `finish_reason`, a Message's `stop_reason`, or
    a Response's `status`."""
    choices = result.get("choices")
    if choices and isinstance(choices[0], dict):
        return choices[0].get("finish_reason")
    found = result.get("stop_reason") or result.get("status")
    return found if isinstance(found, str) else None


def note_answer(
    record: RequestRecord, text: str, finish: str | None, refusals: Sequence[str]
) -> None:
    """The live-answer signals on the record (the metrics count them)."""
    record.finish_reason = finish
    if record.endpoint == "embeddings":
        return
    empty, refused = answer_signals(text, refusals)
    record.answer_signal = "empty" if empty and finish != "tool_calls" else (
        "refusal" if refused else None)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Calls:
    """What calling the gateway's backends takes: the backends, the attempt loop, the
    feedback channel, whether a backend starts cold, and the phrases of a refusal (the live
    answers' signals, `monitors.refusal_phrases`)."""

    backends: Mapping[str, Backend]
    resilience: Resilience
    feedback: Feedback
    cold: Callable[[str], bool]
    refusals: tuple[str, ...] = ()


class Answers:
    """Calls the gateway's backends for whole answers."""

    def __init__(self, calls: Calls, log_bodies: bool) -> None:
        self.calls = calls
        self.log_bodies = log_bodies

    async def complete(
        self,
        routed: Routed,
        headers: dict[str, str],
        record: RequestRecord,
        route: RouteConfig | None,
        native_for: Callable[[str], Native | None],
    ) -> Reply:
        result, usage, spoke_native = await self.calls.resilience.first_success(
            routed.decision, route, headers, self._attempt(routed, record, native_for)
        )
        record.take_usage(usage)
        text = response_text(result)
        note_answer(record, text, finish_reason(result), self.calls.refusals)
        if self.log_bodies:
            record.response_text = text
        self.calls.feedback.request_finished(record)  # closes the books: the actual cost is known
        if record.cost_usd is not None:
            headers["x-gateway-cost-usd"] = f"{record.cost_usd:.10f}"
        return Reply(200, orjson.dumps(result), headers, native=spoke_native)

    def _attempt(
        self, routed: Routed, record: RequestRecord, native_for: Callable[[str], Native | None]
    ) -> Any:
        endpoint = routed.prepared.endpoint

        async def attempt(name: str, limits: Limits) -> tuple[dict[str, Any], dict[str, Any], bool]:
            native = native_for(name)
            async with self.calls.feedback.attempt(name, record, streamed=False) as attempt:
                attempt.outcome.cold = self.calls.cold(name)
                try:
                    async with asyncio.timeout(limits.total_s):
                        if native is None:
                            body = routed.body_for(name)
                            result = await self.calls.backends[name].complete(endpoint, body)
                        else:
                            result = await self.calls.backends[name].complete(
                                native.api.endpoint, native.body
                            )
                except TimeoutError:
                    # The upstream bills what it generated for a call we stopped waiting for.
                    record.abandoned_usd += routed.estimated_cost_usd(name)
                    raise timeout_error(name, "the answer", limits.total_s) from None
                except asyncio.CancelledError:  # the client left: the upstream bills it all
                    record.abandoned_usd += routed.estimated_cost_usd(name)
                    raise
                usage = result.get("usage") or {}
                if native is not None:
                    usage = native.api.usage_in_chat_terms(usage)
                tokens = usage.get("completion_tokens")
                attempt.answered(tokens if isinstance(tokens, int) else None)
            return result, usage, native is not None

        return attempt
