"""Spill-over while a backend scaled to zero starts, in process: the pipeline over fake
backends, with Serve's replica states played by the test. Real Serve and a real vLLM engine
starting from zero: tests/integration/test_spillover.py."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson

from deployments import FakeBackend, FakeBackendConfig
from gateway.config import GatewayConfig
from gateway.core.build import build_gateway
from gateway.core.replies import Reply

ZERO = {"autoscaling_config": {"min_replicas": 0, "max_replicas": 1}}
PRIOR = {"ttft_ms": 50, "tpot_ms": 5, "cold_start_s": 30}
CONFIG: dict[str, Any] = {
    "backends": {
        "local": {"kind": "fake", "model": "local-1", "placement": "deployment",
                  "deployment": ZERO, "latency_prior": PRIOR},
        "api": {"kind": "fake", "model": "api-1",
                "pricing": {"input_per_mtok": 1, "output_per_mtok": 2}},
    },
    "routes": {"spill": {"policy": "cheapest", "candidates": ["local", "api"]}},
}  # fmt: skip


class Waking(FakeBackend):
    def __init__(self, config: FakeBackendConfig) -> None:
        super().__init__(config)
        self.woken = 0

    async def wake(self) -> None:
        self.woken += 1


async def test_a_cold_backend_spills_budgeted_requests_until_a_replica_runs(
    tmp_path: Path,
) -> None:
    config = GatewayConfig.load(
        {
            **CONFIG,
            "ledger": {"path": str(tmp_path / "l.sqlite")},
            "request_log": {"enabled": False},
        }
    )
    backends = {
        name: Waking(backend)
        for name, backend in config.backends.items()
        if isinstance(backend, FakeBackendConfig)
    }
    serve_says: dict[str, Any] = {"local": {"replicas": {}, "target_replicas": 0}}
    gateway, ledger = build_gateway(
        config, backends, tmp_path, replica_states=lambda names: dict(serve_says)
    )
    assert gateway.capacity is not None and gateway.capacity.watched == ["local"]
    capacity = gateway.capacity
    clock = [0.0]
    capacity.clock = lambda: clock[0]

    async def ask(budget_ms: float | None = 2000) -> Reply:
        body: dict[str, Any] = {
            "model": "spill",
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 16,
        }
        if budget_ms is not None:
            body["routing"] = {"latency_budget_ms": budget_ms}
        reply = await gateway.handle("chat/completions", orjson.dumps(body), {}, "r")
        assert isinstance(reply, Reply) and reply.status == 200
        return reply

    spilled = await ask()
    assert spilled.headers["x-gateway-backend"] == "api"
    assert spilled.headers["x-gateway-spillover"] == "cold_start"
    await asyncio.sleep(0)
    assert backends["local"].woken == 1  # the gateway asked Serve for a replica
    assert capacity.describe("local")["cold_start_eta_ms"] == 30_000  # type: ignore[index]
    # Serve starts one; 12 s later it runs. Budgeted requests go back to the cheap backend.
    serve_says["local"] = {"replicas": {"STARTING": 1}, "target_replicas": 1}
    capacity.update(serve_says)
    clock[0] = 12.0
    assert (await ask()).headers["x-gateway-backend"] == "api"
    serve_says["local"] = {"replicas": {"RUNNING": 1}, "target_replicas": 1}
    capacity.update(serve_says)
    back = await ask()
    assert (
        back.headers["x-gateway-backend"] == "local" and "x-gateway-spillover" not in back.headers
    )
    # What it saw replaces the prior: 12 s observed, learned halfway from 30 s.
    assert capacity.describe("local")["observed_cold_starts_s"] == [12.0]  # type: ignore[index]
    assert capacity.learned_s["local"] == 21.0
    local_stats = gateway.routing.live.stats["local"]
    assert len(local_stats.ttft_window) == 1  # the warm answer is a latency sample
    # Scaled back to zero: requests without a budget wait for it (and wake it), no spill.
    serve_says["local"] = {"replicas": {}, "target_replicas": 0}
    capacity.update(serve_says)
    waited = await ask(budget_ms=None)
    assert waited.headers["x-gateway-backend"] == "local"
    assert backends["local"].woken == 2
    # Its wait included a cold start: not a sample of how fast the backend answers once up.
    assert len(local_stats.ttft_window) == 1
    await gateway.aclose()
    assert ledger is not None
    rows = {(r["backend"], r["spillover"], r["spilled_from"]) for r in ledger.rows()}
    assert ("api", "cold_start", "local") in rows and ("local", None, None) in rows
