"""Prometheus metrics through `ray.serve.metrics`, exported by Ray's metrics agent on each node.

Scrape `http://<node>:<metrics-export-port>/metrics` (`ray start --metrics-export-port=8080`);
Ray prefixes every name with `ray_`. `configs/grafana-dashboard.json` charts them. Ray is
imported when a `GatewayMetrics` is built (inside a Serve replica), never at module import.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from llmops._batch import BatchWriter
from llmops._monitors import ALERT, MonitorRun
from llmops._record import RequestRecord

LATENCY_MS: list[float] = [5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000]
TPOT_MS: list[float] = [1, 2, 5, 10, 20, 50, 100, 250, 500]
ANSWER_TOKENS: list[float] = [1, 4, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
CIRCUIT_LEVEL = {"closed": 0.0, "half_open": 1.0, "open": 2.0}
# A metric call costs several microseconds: batched once a second, off the event loop.
BATCH_S = 1.0


def _tags(*keys: str) -> Any:
    # Ray annotates tag_keys as Tuple[str] (one element); any number is accepted.
    return keys


def _cache_counters(metrics: Any) -> tuple[Any, Any]:
    requests = metrics.Counter(
        "gateway_cache_requests",
        "Requests on caching routes by result: hit, miss, bypass.",
        _tags("route", "result"),
    )
    saved = metrics.Counter(
        "gateway_cache_saved_usd", "What cache hits would have cost, USD.", _tags("route")
    )
    return requests, saved


def _guardrail_counters(metrics: Any) -> tuple[Any, Any]:
    actions = metrics.Counter(
        "gateway_guardrail_interventions",
        "Requests the guardrails changed or refused, by action: masked, anonymized, blocked, "
        "denied, flagged, unchecked, unavailable.",
        _tags("route", "action"),
    )
    entities = metrics.Counter(
        "gateway_guardrail_entities",
        "Personal data and secrets found, by entity type (counts, never values).",
        _tags("route", "entity"),
    )
    return actions, entities


def _monitor_gauges(metrics: Any) -> tuple[Any, Any, Any]:
    score = metrics.Gauge(
        "gateway_monitor_score",
        "A drift monitor's latest score on a target (0..1).",
        _tags("monitor", "target"),
    )
    bounds = metrics.Gauge(
        "gateway_monitor_interval",
        "The latest score's 95% interval (bound: low, high) and the baseline's "
        "(bound: baseline_low, baseline_high).",
        _tags("monitor", "target", "bound"),
    )
    alert = metrics.Gauge(
        "gateway_monitor_alert",
        "1 while a monitor's latest score is outside its baseline's interval, else 0.",
        _tags("monitor", "target"),
    )
    return score, bounds, alert


def _answer_counters(metrics: Any) -> tuple[Any, Any, Any]:
    finishes = metrics.Counter(
        "gateway_finish_reasons",
        "Answers by backend and finish reason (stop, length, tool_calls, ...).",
        _tags("backend", "reason"),
    )
    signals = metrics.Counter(
        "gateway_answer_signals",
        "Answers whose text was empty or a refusal (signal), by backend.",
        _tags("backend", "signal"),
    )
    lengths = metrics.Histogram(
        "gateway_answer_tokens", "Output tokens per answer.", ANSWER_TOKENS, _tags("backend")
    )
    return finishes, signals, lengths


class GatewayMetrics:
    """A sink: every metric is derived from a finished request's record or a circuit's state."""

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
        self.spillovers = metrics.Counter(
            "gateway_spillovers",
            "Requests a backend could not serve within their latency budget for want of "
            "capacity (reason: cold_start or queue), served by another candidate.",
            _tags("backend", "reason"),
        )
        self.circuit = metrics.Gauge(
            "gateway_circuit_state", "0 closed, 1 half-open, 2 open.", _tags("backend")
        )
        self.cache, self.saved = _cache_counters(metrics)
        self.guardrails, self.entities = _guardrail_counters(metrics)
        self.monitor_score, self.monitor_bounds, self.monitor_alert = _monitor_gauges(metrics)
        self.finishes, self.signals, self.answer_tokens = _answer_counters(metrics)
        self._writer: BatchWriter[RequestRecord] = BatchWriter("metrics", self._observe, BATCH_S)

    def write(self, record: RequestRecord) -> None:
        self._writer.add(record)

    def flush(self, timeout_s: float = 5.0) -> bool:
        return self._writer.flush(timeout_s)

    def close(self) -> None:
        self._writer.close()

    def _guarded(self, route: str, action: str, entities: str | None) -> None:
        self.guardrails.inc(tags={"route": route, "action": action})
        for pair in entities.split(",") if entities else ():
            entity, _, count = pair.partition(":")
            self.entities.inc(int(count), tags={"route": route, "entity": entity})

    def _observe(self, records: list[RequestRecord]) -> None:
        for record in records:
            self._observe_one(record)

    def _observe_one(self, record: RequestRecord) -> None:
        backend, route = record.backend or "none", record.route or "none"
        self.requests.inc(tags={"route": route, "backend": backend, "status": str(record.status)})
        if record.task:
            self.tasks.inc(tags={"task": record.task})
        if record.spilled_from:
            tags = {"backend": record.spilled_from, "reason": record.spillover or "none"}
            self.spillovers.inc(tags=tags)
        if record.experiment:
            self.arms.inc(tags={"experiment": record.experiment, "arm": record.arm or "none"})
        if len(record.attempts) > 1:
            self.retries.inc(len(record.attempts) - 1, tags={"route": route})
            if record.attempts[-1] != record.attempts[0]:
                self.fallbacks.inc(tags={"route": route})
        if record.cache is not None:
            self.cache.inc(tags={"route": route, "result": record.cache})
        if record.guardrail is not None and record.guardrail != "passed":
            self._guarded(route, record.guardrail, record.guardrail_entities)
        if record.backend is None:
            return
        if record.cache == "hit":  # no backend was called: its tokens and latency are not
            if record.saved_usd:
                self.saved.inc(record.saved_usd, tags={"route": route})
            return
        if record.prompt_tokens:
            self.tokens.inc(record.prompt_tokens, tags={"backend": backend, "direction": "in"})
        if record.completion_tokens:
            tokens = record.completion_tokens
            self.tokens.inc(tokens, tags={"backend": backend, "direction": "out"})
        self._answer(record, backend)
        if record.cost_usd:
            self.cost.inc(record.cost_usd, tags={"backend": backend, "route": route})
        if record.latency_ms is not None:
            self.latency.observe(record.latency_ms, tags={"backend": backend, "route": route})
        if record.ttft_ms is not None:
            self.ttft.observe(record.ttft_ms, tags={"backend": backend})
            tokens = record.completion_tokens or 0
            if tokens > 1 and record.latency_ms is not None:
                per_token = (record.latency_ms - record.ttft_ms) / (tokens - 1)
                self.tpot.observe(per_token, tags={"backend": backend})

    def _answer(self, record: RequestRecord, backend: str) -> None:
        if record.status != 200:
            return
        if record.finish_reason:
            self.finishes.inc(tags={"backend": backend, "reason": record.finish_reason})
        if record.answer_signal:
            self.signals.inc(tags={"backend": backend, "signal": record.answer_signal})
        if record.completion_tokens is not None:
            self.answer_tokens.observe(record.completion_tokens, tags={"backend": backend})

    def monitor(self, run: MonitorRun) -> None:
        """A drift monitor's run: its score, intervals and alert state."""
        tags = {"monitor": run.monitor, "target": run.target}
        self.monitor_score.set(run.score, tags=tags)
        bounds = {"low": run.low, "high": run.high, "baseline_low": run.baseline_low,
                  "baseline_high": run.baseline_high}  # fmt: skip
        for bound, value in bounds.items():
            if value is not None:
                self.monitor_bounds.set(value, tags={**tags, "bound": bound})
        self.monitor_alert.set(1.0 if run.state == ALERT else 0.0, tags=tags)

    def circuits(self, states: Mapping[str, str]) -> None:
        for backend, state in states.items():
            self.circuit.set(CIRCUIT_LEVEL.get(state, 0.0), tags={"backend": backend})
