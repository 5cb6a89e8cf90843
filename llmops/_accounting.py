"""Closing a request's books: cost from the upstream's own usage (or the router's estimate),
then the record goes to every sink (ledger, request log, metrics)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from llmops._record import RequestRecord

logger = logging.getLogger("ray.serve")


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float | None = None  # None: as `input_per_mtok`
    cache_write_per_mtok: float | None = None

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached: int = 0, written: int = 0
    ) -> float:
        """`prompt_tokens` counts all input; `cached` of them were read from the provider's
        prompt cache and `written` written to it, each at its own price where it has one."""
        cached, written = min(cached, prompt_tokens), min(written, prompt_tokens - cached)
        read_price = self.input_per_mtok if self.cached_input_per_mtok is None else (
            self.cached_input_per_mtok)  # fmt: skip
        write_price = self.input_per_mtok if self.cache_write_per_mtok is None else (
            self.cache_write_per_mtok)  # fmt: skip
        paid = (
            (prompt_tokens - cached - written) * self.input_per_mtok
            + cached * read_price
            + written * write_price
            + completion_tokens * self.output_per_mtok
        )
        return paid / 1e6


class Sink(Protocol):
    """Where finished records go. `write` must not block: sinks queue and write in batches."""

    def write(self, record: RequestRecord) -> None: ...

    def close(self) -> None: ...


class Accounting:
    """Costs finished requests and fans them out to the sinks."""

    def __init__(self, prices: Mapping[str, Price], sinks: Sequence[Sink] = ()) -> None:
        self.prices = dict(prices)
        self.sinks = list(sinks)

    def close_books(self, record: RequestRecord) -> None:
        """Latency, token counts and cost of a finished request."""
        record.latency_ms = (time.perf_counter() - record.started) * 1000
        if record.usage_source == "none" and record.completion_tokens is not None:
            # No usage from upstream: the router's prompt count, the stream's events.
            record.prompt_tokens = record.estimated_prompt_tokens or 0
            record.usage_source = "estimated"
        price = self.prices.get(record.backend or "")
        if price is not None and record.prompt_tokens is not None:
            elsewhere = record.billed_elsewhere
            record.cost_usd = price.cost(
                max(0, record.prompt_tokens - sum(p for _, p, _ in elsewhere)),
                max(0, (record.completion_tokens or 0) - sum(c for _, _, c in elsewhere)),
                record.cached_tokens or 0,
                record.cache_write_tokens or 0,
            ) + self._elsewhere(elsewhere)
        if record.cache == "hit":  # served from the gateway's cache: nothing was paid
            record.saved_usd, record.cost_usd = record.cost_usd or 0.0, 0.0
            return
        if record.abandoned_usd:
            # Billed upstream though never answered: charged at the router's estimate.
            record.cost_usd = (record.cost_usd or 0.0) + record.abandoned_usd
            if record.usage_source == "none":
                record.usage_source = "estimated"

    def _elsewhere(self, billed: list[tuple[str, int, int]]) -> float:
        """What backends that broke off a continued stream billed, each at its price."""
        total = 0.0
        for backend, prompt, completion in billed:
            price = self.prices.get(backend)
            total += price.cost(prompt, completion, 0, 0) if price is not None else 0.0
        return total

    def finish(self, record: RequestRecord) -> None:
        """Close the books and write the record everywhere; never raises into a request."""
        try:
            self.close_books(record)
        except Exception:
            logger.exception("costing failed for request %s", record.request_id)
        for sink in self.sinks:
            try:
                sink.write(record)
            except Exception:  # bookkeeping must not fail a request that already succeeded
                logger.exception("%s failed for request %s", type(sink).__name__, record.request_id)

    def close(self) -> None:
        """Write everything still queued (shutdown)."""
        for sink in self.sinks:
            try:
                sink.close()
            except Exception:
                logger.exception("closing %s failed", type(sink).__name__)
