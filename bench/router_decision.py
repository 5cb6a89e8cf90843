"""Router decision time (20 candidates, classification excluded) and task classifier latency.

Run: .venv/bin/python bench/router_decision.py   (figures go to docs/routing.md)
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.task_examples import TASKS
from router import (
    BackendProfile,
    BackendStats,
    LatencyPrior,
    RequestSummary,
    RouteConfig,
    Router,
    RoutingConfig,
    RoutingHints,
    TaskClassifier,
    TaskConfig,
)

CANDIDATES = 20


def percentiles(samples_us: list[float]) -> dict[str, float]:
    ordered = sorted(samples_us)
    return {
        "p50": round(statistics.median(ordered), 1),
        "p99": round(ordered[int(len(ordered) * 0.99)], 1),
    }


def decision_times(policy: str, runs: int = 20000) -> dict[str, float]:
    names = [f"backend-{i}" for i in range(CANDIDATES)]
    profiles = {
        name: BackendProfile(
            name,
            0.1 * i,
            0.3 * i,
            gpu_hour_usd=2.0 if i % 3 == 0 else 0.0,
            context_window=8192,
            latency_prior=LatencyPrior(100 + 10 * i, 5),
        )
        for i, name in enumerate(names)
    }
    route = RouteConfig(
        policy=policy,
        candidates=tuple(names),
        fallbacks=tuple(names[:3]),
        weights={n: 1.0 for n in names} if policy == "weighted" else {},
    )
    router = Router(RoutingConfig(routes={"r": route}), profiles)
    stats = {}
    for name in names:
        backend = BackendStats(profiles[name].latency_prior)
        for sample in range(50):
            backend.record(100 + sample, 5 + sample % 3, 100)
        stats[name] = backend.snapshot()
    summary = RequestSummary(
        prompt_text="word " * 200,
        max_tokens=256,
        hints=RoutingHints(latency_budget_ms=2500, max_cost_usd=0.01),
    )
    samples = []
    for seed in range(runs):
        started = time.perf_counter_ns()
        router.decide(
            "r",
            {},
            RequestSummary(summary.prompt_text, summary.max_tokens, summary.hints, seed=seed),
            stats,
        )
        samples.append((time.perf_counter_ns() - started) / 1000)
    return percentiles(samples[1000:])


def classifier_times(runs: int = 100) -> dict[str, float]:
    from router._embedding import MiniLMEmbedder

    tasks = {name: TaskConfig(examples=tuple(t["examples"])) for name, t in TASKS.items()}
    classifier = TaskClassifier(RoutingConfig(tasks=tasks), MiniLMEmbedder())
    prompt = " ".join(["The quarterly report shows revenue growth across all regions."] * 20)
    tokens = len(prompt.split()) * 4 // 3  # ~200 tokens for MiniLM's word pieces
    samples = []
    for _ in range(runs):
        started = time.perf_counter_ns()
        classifier.classify(prompt)
        samples.append((time.perf_counter_ns() - started) / 1000)
    result = percentiles(samples[10:])
    return {"prompt_tokens": tokens, "p50_ms": result["p50"] / 1000, "p99_ms": result["p99"] / 1000}


if __name__ == "__main__":
    figures = {
        f"decide_{policy}_us": decision_times(policy)
        for policy in ("cheapest", "fastest", "balanced", "weighted", "ordered")
    }
    figures["classifier"] = classifier_times()
    print(json.dumps({"candidates": CANDIDATES, **figures}, indent=2))
