"""Prometheus metrics through `ray.serve.metrics`, exported by Ray's metrics agent on each node.

Scrape `http://<node>:<metrics-export-port>/metrics` (`ray start --metrics-export-port=8080`);
Ray prefixes every name with `ray_`. `configs/grafana-dashboard.json` charts them.
"""

from __future__ import annotations

from typing import Any

from gateway.accounting import Trace

LATENCY_MS: list[float] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
TPOT_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 250, 500]
CIRCUIT_LEVEL = {"closed": 0.0, "half_open": 1.0, "open": 2.0}


def _tags(*keys: str) -> Any:
    # Ray annotates tag_keys as Tuple[str] (one element); any number is accepted.
    return keys


class GatewayMetrics:
    """Every metric is derived from a finished request's `Trace` or a circuit's state."""

    def __init__(self) -> None:
        from ray.serve import metrics

        self.requests = metrics.Counter(
            "gateway_requests",
            "Requests by route, backend and HTTP status.",
            _tags("route", "backend", "status"),
        )
        self.tokens = metrics.Counter(
            "gateway_tokens",
            "Tokens by backend and direction (in/out).",
            _tags("backend", "direction"),
        )
        self.cost = metrics.Counter(
            "gateway_cost_usd",
            "Actual cost in USD by backend and route.",
            _tags("backend", "route"),
        )
        self.ttft = metrics.Histogram(
            "gateway_ttft_ms", "Time to first token of streams, ms.", LATENCY_MS, _tags("backend")
        )
        self.latency = metrics.Histogram(
            "gateway_latency_ms", "End-to-end latency, ms.", LATENCY_MS, _tags("backend", "route")
        )
        self.tpot = metrics.Histogram(
            "gateway_tpot_ms",
            "Time per output token after the first, ms.",
            TPOT_MS,
            _tags("backend"),
        )
        self.fallbacks = metrics.Counter(
            "gateway_fallbacks",
            "Requests served by other than their first backend.",
            _tags("route"),
        )
        self.retries = metrics.Counter(
            "gateway_attempts_beyond_first", "Extra backend calls per request.", _tags("route")
        )
        self.tasks = metrics.Counter(
            "gateway_task_decisions", "Routing decisions by task.", _tags("task")
        )
        self.arms = metrics.Counter(
            "gateway_experiment_arms", "Requests per experiment arm.", _tags("experiment", "arm")
        )
        self._pending: list[Trace] = []
        self.circuit = metrics.Gauge(
            "gateway_circuit_state", "0 closed, 1 half-open, 2 open.", _tags("backend")
        )

    def record(self, trace: Trace) -> None:
        """Queue a finished request; `flush` turns the queue into Ray metric calls."""
        self._pending.append(trace)

    def flush(self) -> None:
        pending, self._pending = self._pending, []
        for trace in pending:
            self._observe(trace)

    def _observe(self, trace: Trace) -> None:
        backend, route = trace.backend or "none", trace.route or "none"
        self.requests.inc(tags={"route": route, "backend": backend, "status": str(trace.status)})
        if trace.task:
            self.tasks.inc(tags={"task": trace.task})
        if trace.experiment:
            self.arms.inc(tags={"experiment": trace.experiment, "arm": trace.arm or "none"})
        if len(trace.attempts) > 1:
            self.retries.inc(len(trace.attempts) - 1, tags={"route": route})
            if trace.attempts[-1] != trace.attempts[0]:
                self.fallbacks.inc(tags={"route": route})
        if trace.backend is None:
            return
        if trace.prompt_tokens:
            self.tokens.inc(trace.prompt_tokens, tags={"backend": backend, "direction": "in"})
        if trace.completion_tokens:
            self.tokens.inc(trace.completion_tokens, tags={"backend": backend, "direction": "out"})
        if trace.cost_usd:
            self.cost.inc(trace.cost_usd, tags={"backend": backend, "route": route})
        if trace.latency_ms is not None:
            self.latency.observe(trace.latency_ms, tags={"backend": backend, "route": route})
        if trace.ttft_ms is not None:
            self.ttft.observe(trace.ttft_ms, tags={"backend": backend})
            tokens = trace.completion_tokens or 0
            if tokens > 1 and trace.latency_ms is not None:
                per_token = (trace.latency_ms - trace.ttft_ms) / (tokens - 1)
                self.tpot.observe(per_token, tags={"backend": backend})

    def circuits(self, states: dict[str, Any]) -> None:
        for backend, state in states.items():
            self.circuit.set(CIRCUIT_LEVEL.get(state, 0.0), tags={"backend": backend})
