"""Whole (unstreamed) answers: the first backend of the decision that answers, with fallbacks
and retries, within its total timeout; the usage and cost of the answer on the record."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson

from deployments import Backend
from gateway.core.attempts import Feedback
from gateway.core.front import Native
from gateway.core.replies import Reply
from gateway.core.resilience import Limits, Resilience, timeout_error
from gateway.core.routing import Routed
from llmops import RequestRecord, response_text
from router import RouteConfig


class Answers:
    """Calls the gateway's backends for whole answers."""

    def __init__(
        self,
        backends: Mapping[str, Backend],
        resilience: Resilience,
        feedback: Feedback,
        cold: Callable[[str], bool],
        log_bodies: bool,
    ) -> None:
        self.backends = backends
        self.resilience = resilience
        self.feedback = feedback
        self.cold = cold
        self.log_bodies = log_bodies

    async def complete(
        self,
        routed: Routed,
        headers: dict[str, str],
        record: RequestRecord,
        route: RouteConfig | None,
        native_for: Callable[[str], Native | None],
    ) -> Reply:
        result, usage, spoke_native = await self.resilience.first_success(
            routed.decision, route, headers, self._attempt(routed, record, native_for)
        )
        record.take_usage(usage)
        if self.log_bodies:
            record.response_text = response_text(result)
        self.feedback.request_finished(record)  # closes the books: the actual cost is known
        if record.cost_usd is not None:
            headers["x-gateway-cost-usd"] = f"{record.cost_usd:.10f}"
        return Reply(200, orjson.dumps(result), headers, native=spoke_native)

    def _attempt(
        self, routed: Routed, record: RequestRecord, native_for: Callable[[str], Native | None]
    ) -> Any:
        endpoint = routed.prepared.endpoint

        async def attempt(name: str, limits: Limits) -> tuple[dict[str, Any], dict[str, Any], bool]:
            native = native_for(name)
            async with self.feedback.attempt(name, record, streamed=False) as attempt:
                attempt.outcome.cold = self.cold(name)
                try:
                    async with asyncio.timeout(limits.total_s):
                        if native is None:
                            body = routed.body_for(name)
                            result = await self.backends[name].complete(endpoint, body)
                        else:
                            result = await self.backends[name].complete(
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
