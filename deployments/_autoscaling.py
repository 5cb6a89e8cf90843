"""LLM-aware autoscaling: a vLLM deployment can scale on the tokens it has in flight instead
of Serve's default, requests in flight.

Requests to an engine differ by orders of magnitude (8 tokens or 4,000), so "2 requests per
replica" means little; tokens in flight (the output tokens requests may still produce, by
their `max_tokens`) is what fills a replica's KV cache and batch. Each replica reports it
(`record_autoscaling_stats`, Ray Serve's custom-metrics hook) along with its recent time to
first token; `TokensInFlightPolicy` runs in Serve's controller and asks for
`ceil(tokens in flight / target per replica)` replicas, and one more while the time to first
token is over its target. Serve then applies the bounds and the up/down delays as usual.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncGenerator
from typing import Any

from ray.serve.llm.deployment import LLMServer

TTFT_SMOOTHING = 0.3
DEFAULT_MAX_TOKENS = 256  # what a request without max_tokens is assumed to ask for


def _max_tokens(request: Any) -> int:
    for name in ("max_completion_tokens", "max_tokens"):
        value = getattr(request, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return DEFAULT_MAX_TOKENS


class LoadReportingLLMServer(LLMServer):
    """Ray Serve LLM's `LLMServer`, counting tokens in flight and time to first token for the
    autoscaler. Nothing else changes."""

    _tokens_in_flight = 0
    _ttft_ms: float | None = None

    async def chat(self, request: Any, raw_request_info: Any = None) -> Any:
        stream = await super().chat(request, raw_request_info)
        return self._tracked(stream, _max_tokens(request))

    async def completions(self, request: Any, raw_request_info: Any = None) -> Any:
        stream = await super().completions(request, raw_request_info)
        return self._tracked(stream, _max_tokens(request))

    async def _tracked(self, stream: Any, tokens: int) -> AsyncGenerator[Any, None]:
        self._tokens_in_flight += tokens
        started, first = time.monotonic(), True
        try:
            async for item in stream:
                if first:
                    first = False
                    ttft = (time.monotonic() - started) * 1000
                    previous = self._ttft_ms
                    self._ttft_ms = (
                        ttft
                        if previous is None
                        else (previous + TTFT_SMOOTHING * (ttft - previous))
                    )
                yield item
        finally:
            self._tokens_in_flight -= tokens

    def record_autoscaling_stats(self) -> dict[str, float]:
        return {
            "tokens_in_flight": float(self._tokens_in_flight),
            "ttft_ms": float(self._ttft_ms or 0.0),
        }


class TokensInFlightPolicy:
    """Serve autoscaling policy (runs in the controller, once per tick)."""

    def __init__(self, target_tokens_per_replica: float, target_ttft_ms: float | None = None):
        self.target_tokens = target_tokens_per_replica
        self.target_ttft_ms = target_ttft_ms

    def __call__(self, ctx: Any) -> tuple[int, dict[str, Any]]:
        metrics = ctx.aggregated_metrics or {}
        tokens = sum((metrics.get("tokens_in_flight") or {}).values())
        desired = math.ceil(tokens / self.target_tokens) if tokens else 0
        ttfts = [v for v in (metrics.get("ttft_ms") or {}).values() if v]
        slow = bool(self.target_ttft_ms and ttfts and max(ttfts) > self.target_ttft_ms)
        if slow:
            desired = max(desired, ctx.current_num_replicas + 1)
        desired = max(desired, ctx.capacity_adjusted_min_replicas)
        desired = min(desired, ctx.capacity_adjusted_max_replicas)
        state = {"tokens_in_flight": tokens, "slow": slow}
        return desired, state
