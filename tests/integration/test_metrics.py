"""Prometheus metrics from `ray.serve.metrics`, scraped from Ray's metrics endpoint."""

from __future__ import annotations

import re
import time

import httpx
import pytest

from tests.integration.conftest import Stack

pytestmark = pytest.mark.integration


def _value(text: str, metric: str, **labels: str) -> float:
    """Sum of the samples of `metric` whose labels include `labels`."""
    total = 0.0
    for line in text.splitlines():
        if not line.startswith(metric + "{"):
            continue
        if all(f'{key}="{value}"' in line for key, value in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def test_requests_tokens_cost_and_latency_are_exported(stack: Stack) -> None:
    body = {"model": "fast-dear", "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4}  # fmt: skip
    for stream in (False, True):
        response = httpx.post(
            f"{stack.base_url}/chat/completions", json={**body, "stream": stream}, timeout=30
        )
        assert response.status_code == 200
    for user in ("metrics-1", "metrics-2"):  # an experiment's arms are counted too
        experiment = {**body, "model": "ab-route", "user": user}
        response = httpx.post(f"{stack.base_url}/chat/completions", json=experiment, timeout=30)
        assert response.status_code == 200
    text, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline:  # Ray's agent exports every few seconds
        text = httpx.get(stack.metrics_url, timeout=10).text
        if _value(text, "ray_gateway_requests_total", backend="fast-dear") >= 2 and (
            "ray_gateway_ttft_ms_bucket" in text
        ):
            break
        time.sleep(2)
    assert _value(text, "ray_gateway_requests_total", backend="fast-dear", status="200") >= 2
    assert _value(text, "ray_gateway_cost_usd_total", backend="fast-dear") > 0
    assert _value(text, "ray_gateway_tokens_total", backend="fast-dear", direction="out") >= 8
    assert _value(text, "ray_gateway_ttft_ms_count", backend="fast-dear") >= 1
    assert _value(text, "ray_gateway_latency_ms_count", backend="fast-dear") >= 2
    assert re.search(r'^ray_gateway_circuit_state\{.*backend="fast-dear"', text, re.M)
    assert _value(text, "ray_gateway_experiment_arms_total", experiment="ab") >= 2
