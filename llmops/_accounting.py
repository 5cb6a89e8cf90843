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

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        paid = prompt_tokens * self.input_per_mtok + completion_tokens * self.output_per_mtok
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
            record.cost_usd = price.cost(record.prompt_tokens, record.completion_tokens or 0)
        if record.abandoned_usd:
            # Billed upstream though never answered: charged at the router's estimate.
            record.cost_usd = (record.cost_usd or 0.0) + record.abandoned_usd
            if record.usage_source == "none":
                record.usage_source = "estimated"

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
