"""Scale from zero without making users wait, on real Serve with a real vLLM engine: a
backend at `min_replicas: 0` next to a paid API. Requests with a latency budget spill to the
API while the engine starts (`x-gateway-spillover: cold_start`), then land on the engine once
it runs; after the idle timeout it is back at zero, and a request without a budget waits for
it. The times go in docs/scaling.md."""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import TINY_MODEL, wait_until
from tests.integration.conftest import TINY_ENGINE, Stack

pytestmark = pytest.mark.integration
PREFIX = "/cold"
SCALE_TO_ZERO = {
    "min_replicas": 0,
    "max_replicas": 1,
    "initial_replicas": 0,
    "upscale_delay_s": 0,
    "downscale_delay_s": 15,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
}


def cold_config(stack: Stack) -> dict[str, Any]:
    return {
        "backends": {
            "cold-vllm": {
                "kind": "vllm",
                "model": "tiny-cold",
                "source": str(TINY_MODEL),
                "accelerator": "cpu",
                "engine_kwargs": TINY_ENGINE,
                "deployment": {
                    "autoscaling_config": SCALE_TO_ZERO,
                    "ray_actor_options": {"num_cpus": 1},
                },
                "latency_prior": {"ttft_ms": 100, "tpot_ms": 10, "cold_start_s": 60},
                "timeouts": {"first_token_s": 240, "total_s": 300},
            },
            "api": {
                "kind": "openai",
                "model": "stub",
                "base_url": stack.stubs["backup"][0] + "/v1",
                "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                "latency_prior": {"ttft_ms": 50, "tpot_ms": 2},
            },
        },
        "routes": {"spill": {"policy": "cheapest", "candidates": ["cold-vllm", "api"]}},
        "ingress": {"health_check_interval_s": 1},
        "ledger": {"path": str(stack.logs / "cold-ledger.sqlite")},
        "request_log": {"path": str(stack.logs / "cold-requests.jsonl")},
    }


def cold_view(root: str) -> dict[str, Any]:
    data = httpx.get(f"{root}/v1/gateway/backends", timeout=10).json()["data"]
    return next(entry for entry in data if entry["id"] == "cold-vllm")


@pytest.fixture(scope="module")
def cold(stack: Stack) -> Iterator[str]:
    from ray import serve

    from gateway.app import build_app

    serve.run(build_app(cold_config(stack)), name="cold", route_prefix=PREFIX, blocking=False)
    root = stack.root_url + PREFIX
    wait_until(lambda: httpx.get(f"{root}/health").status_code == 200, 180, "the cold app")
    yield root
    serve.delete("cold")


def ask(client: httpx.Client, root: str, budget_ms: float | None) -> tuple[int, str, str]:
    body: dict[str, Any] = {
        "model": "spill",
        "messages": [{"role": "user", "content": "hello"}],
        "max_tokens": 8,
    }
    if budget_ms is not None:
        body["routing"] = {"latency_budget_ms": budget_ms}
    response = client.post(f"{root}/v1/chat/completions", json=body, timeout=300)
    headers = response.headers
    return (
        response.status_code,
        headers.get("x-gateway-backend", ""),
        headers.get("x-gateway-spillover", ""),
    )


def test_budgeted_requests_spill_while_the_engine_starts_then_come_back(
    stack: Stack, cold: str
) -> None:
    view = cold_view(cold)
    assert view["cold_start"]["running"] == 0 and view["cold_start"]["cold_start_eta_ms"] > 0
    answers: list[tuple[float, int, str, str]] = []
    started = time.monotonic()
    lock = threading.Lock()
    landed = threading.Event()

    def client_loop() -> None:
        with httpx.Client() as client:
            after_landing = 0
            while after_landing < 5 and time.monotonic() - started < 300:
                status, backend, spill = ask(client, cold, 2000)
                with lock:
                    answers.append((time.monotonic() - started, status, backend, spill))
                if backend == "cold-vllm":
                    landed.set()
                if landed.is_set():
                    after_landing += 1
                time.sleep(0.2)

    threads = [threading.Thread(target=client_loop) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = {status for _, status, _, _ in answers}
    spilled = [a for a in answers if a[2] == "api"]
    assert statuses == {200}  # nothing failed
    assert spilled and all(spill == "cold_start" for *_, spill in spilled)
    first_local = next(t for t, _, backend, _ in answers if backend == "cold-vllm")
    assert [a[2] for a in answers[-4:]] == ["cold-vllm"] * 4  # traffic came back
    assert all(not spill for _, _, backend, spill in answers if backend == "cold-vllm")
    seen = cold_view(cold)["cold_start"]
    assert seen["running"] == 1 and seen["observed_cold_starts_s"]
    print(f"\ncold start: {len(spilled)} requests spilled to the API, the engine answered "
          f"{first_local:.1f}s after the first request; observed start "
          f"{seen['observed_cold_starts_s'][-1]}s")  # fmt: skip
    # The ledger has both: the API's cost, the engine's free answers.
    with sqlite3.connect(stack.logs / "cold-ledger.sqlite") as db:
        rows = db.execute(
            "SELECT backend, COUNT(*), SUM(cost_usd), SUM(spillover = 'cold_start') "
            "FROM requests GROUP BY backend"
        ).fetchall()
    by_backend = {backend: (n, cost, spills) for backend, n, cost, spills in rows}
    assert by_backend["api"][1] > 0 and by_backend["api"][2] == by_backend["api"][0]
    assert by_backend["cold-vllm"][0] >= 4


def test_after_the_idle_timeout_it_is_back_at_zero_and_an_unbudgeted_request_waits(
    stack: Stack, cold: str
) -> None:
    def at_zero() -> bool:
        replicas = cold_view(cold)["deployment"].get("replicas") or {}
        return not replicas.get("RUNNING") and not replicas.get("STOPPING")

    stopped = time.monotonic()
    wait_until(at_zero, 120, "cold-vllm scaled back to zero")
    idle = time.monotonic() - stopped
    started = time.monotonic()
    with httpx.Client() as client:
        status, backend, spill = ask(client, cold, None)
    waited = time.monotonic() - started
    assert (status, backend, spill) == (200, "cold-vllm", "")
    assert waited > 2  # it waited for an engine to start, rather than spill
    print(f"\nback to zero {idle:.1f}s after the test's last request; a request without a "
          f"budget waited {waited:.1f}s for the engine")  # fmt: skip
