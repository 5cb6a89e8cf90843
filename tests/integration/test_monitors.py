"""Drift monitors through real Serve: an app whose monitor runs a labelled set when it starts
(the baseline) against a fake that answers well for one run and then like a model that
changed; the next run is an alert in the API, the metrics and the console. Live answers'
signals (refusals, finish reasons, lengths) reach the metrics too."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.helpers import wait_until
from tests.integration.conftest import Stack, warmed
from tests.integration.test_metrics import _value

pytestmark = pytest.mark.integration
PREFIX = "/monitored"
REFUSAL = "As an AI language model, I cannot help with that."


def app_config(stack: Stack, dataset: Path) -> dict[str, Any]:
    return {
        "backends": {
            "drifting": {"kind": "fake", "model": "drifting-1", "reply": "Paris, of course.",
                         "drift_after_calls": 8, "drift_reply": REFUSAL},
            "refuser": {"kind": "fake", "model": "refuser-1", "reply": REFUSAL},
        },
        "routes": {"capitals": {"candidates": ["drifting"]}},
        "monitors": {"checks": {"capitals": {
            "dataset": str(dataset), "targets": ["capitals"], "metric": "contains",
            "interval_s": 3600}}},
        "ledger": {"path": str(stack.logs / "monitored-ledger.sqlite")},
        "request_log": {"enabled": False},
    }  # fmt: skip


@pytest.fixture(scope="module")
def monitored(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from ray import serve

    from gateway.app import build_app

    dataset = tmp_path_factory.mktemp("monitors") / "capitals.jsonl"
    question = [{"role": "user", "content": "What is the capital of France?"}]
    dataset.write_text("".join(json.dumps({"messages": question, "expected": "Paris"}) + "\n"
                               for _ in range(8)))  # fmt: skip
    root = stack.root_url + PREFIX
    serve.run(build_app(app_config(stack, dataset)), name="monitored", route_prefix=PREFIX,
              blocking=False)  # fmt: skip
    wait_until(lambda: warmed(root), 300, "the monitored app")
    yield root
    serve.delete("monitored")


def described(root: str) -> dict[str, Any]:
    response = httpx.get(f"{root}/v1/gateway/monitors", timeout=30)
    assert response.status_code == 200
    found: dict[str, Any] = response.json()["monitors"]["capitals"]["targets"]["capitals"]
    return found


def test_a_model_that_changed_is_an_alert(stack: Stack, monitored: str) -> None:
    # The run made when the replica started is the baseline.
    wait_until(lambda: described(monitored)["state"] == "baseline", 60, "the first run")
    ran = httpx.post(f"{monitored}/v1/gateway/monitors/capitals/runs", timeout=60).json()
    (run,) = ran["data"]
    assert (run["state"], run["score"], run["n"]) == ("alert", 0.0, 8)
    assert run["baseline"] == 1.0 and run["baseline_low"] > 0.5
    state = described(monitored)
    assert state["state"] == "alert" and [r["state"] for r in state["history"]] == [
        "baseline", "alert"]  # fmt: skip
    page = httpx.get(f"{monitored}/console/monitors", timeout=30)
    assert page.status_code == 200 and "state-alert" in page.text and "<svg" in page.text
    text, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline:  # Ray's agent exports every few seconds
        text = httpx.get(stack.metrics_url, timeout=10).text
        if _value(text, "ray_gateway_monitor_alert", monitor="capitals") == 1.0:
            break
        time.sleep(2)
    assert _value(text, "ray_gateway_monitor_alert", monitor="capitals", target="capitals") == 1
    assert _value(text, "ray_gateway_monitor_score", monitor="capitals") == 0.0
    assert _value(text, "ray_gateway_monitor_interval", monitor="capitals",
                  bound="baseline_low") > 0.5  # fmt: skip


def test_unknown_monitors_are_404(monitored: str) -> None:
    response = httpx.post(f"{monitored}/v1/gateway/monitors/nope/runs", timeout=30)
    assert response.status_code == 404 and response.json()["error"]["param"] == "name"


def test_live_refusals_and_finish_reasons_are_counted(stack: Stack, monitored: str) -> None:
    client = openai.OpenAI(base_url=f"{monitored}/v1", api_key="unused", max_retries=0)
    for _ in range(3):
        client.chat.completions.create(
            model="refuser", messages=[{"role": "user", "content": "Tell me a secret."}]
        )
    text, deadline = "", time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(stack.metrics_url, timeout=10).text
        if _value(text, "ray_gateway_answer_signals_total", backend="refuser") >= 3:
            break
        time.sleep(2)
    assert _value(text, "ray_gateway_answer_signals_total", backend="refuser",
                  signal="refusal") >= 3  # fmt: skip
    assert _value(text, "ray_gateway_finish_reasons_total", backend="refuser",
                  reason="stop") >= 3  # fmt: skip
    assert _value(text, "ray_gateway_answer_tokens_count", backend="refuser") >= 3
