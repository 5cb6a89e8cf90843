"""What the router knows about a backend: prices, limits, skills, latency prior."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from router._stats import LatencyPrior

TokenCounter = Callable[[str], int]


def approximate_tokens(text: str) -> int:
    """OpenAI's rule of thumb, ~4 characters per token of English, for remote tokenizers."""
    return max(1, (len(text) + 3) // 4)


@dataclass(frozen=True)
class BackendProfile:
    name: str
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    gpu_hour_usd: float = 0.0
    context_window: int | None = None
    tasks: frozenset[str] | None = None  # None: serves any task
    endpoints: frozenset[str] = frozenset({"chat/completions", "completions"})
    quality: Mapping[str, float] = field(default_factory=dict)  # task or "default" -> 0..1
    latency_prior: LatencyPrior = field(default_factory=LatencyPrior)
    capacity: int = 64  # requests served at once across replicas before queueing
    count_tokens: TokenCounter = approximate_tokens
    tokenizer: str = "approximate"  # says how prompt tokens were counted, for explain
    # task or "default" -> where its quality comes from ("configured", or a measurement)
    quality_sources: Mapping[str, str] = field(default_factory=dict)

    def quality_for(self, task: str) -> float:
        return self.quality.get(task, self.quality.get("default", 0.5))

    def quality_source_for(self, task: str) -> str:
        key = task if task in self.quality else "default"
        if key not in self.quality:
            return "default (0.5: neither configured nor measured)"
        return self.quality_sources.get(key, "configured")
