"""Autoscaling, proven on real Serve: a proxy deployment (the fake backend with latency) and a
vLLM deployment (the tiny model), each `min_replicas: 1, max_replicas: 2`, under load scale to
two replicas that both serve, and go back to one after the load stops. What
`GET /v1/gateway/backends` says is asserted at every step; the times go in docs/scaling.md."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.helpers import TINY_MODEL, wait_until
from tests.integration.conftest import TINY_ENGINE, Stack

pytestmark = pytest.mark.integration
PREFIX = "/elastic"
FAST_AUTOSCALING = {
    "min_replicas": 1,
    "max_replicas": 2,
    "target_ongoing_requests": 2,
    "upscale_delay_s": 0,
    "downscale_delay_s": 5,
    "metrics_interval_s": 0.5,
    "look_back_period_s": 2,
}


def elastic_config(logs: Any) -> dict[str, Any]:
    deployment = {"autoscaling_config": FAST_AUTOSCALING, "max_ongoing_requests": 16}
    return {
        "backends": {
            "elastic-proxy": {
                "kind": "fake",
                "model": "elastic-1",
                "latency_ms": 400,
                "placement": "deployment",
                "deployment": deployment,
            },
            "elastic-vllm": {
                "kind": "vllm",
                "model": "tiny-elastic",
                "source": str(TINY_MODEL),
                "accelerator": "cpu",
                "engine_kwargs": TINY_ENGINE,
                "deployment": {**deployment, "ray_actor_options": {"num_cpus": 1}},
            },
        },
        "ingress": {"health_check_interval_s": 1},
        "ledger": {"path": str(logs / "elastic-ledger.sqlite")},
        "request_log": {"path": str(logs / "elastic-requests.jsonl")},
    }


@pytest.fixture(scope="module")
def elastic(stack: Stack) -> Iterator[str]:
    from ray import serve

    from gateway.app import build_app

    serve.run(build_app(elastic_config(stack.logs)), name="elastic", route_prefix=PREFIX,
              blocking=False)  # fmt: skip
    root = stack.root_url + PREFIX
    wait_until(lambda: replicas(root, "elastic-vllm").get("RUNNING") == 1, 300, "elastic app")
    yield root
    serve.delete("elastic")


def backend_view(root: str, name: str) -> dict[str, Any]:
    data = httpx.get(f"{root}/v1/gateway/backends", timeout=10).json()["data"]
    return next(entry for entry in data if entry["id"] == name)


def replicas(root: str, name: str) -> dict[str, int]:
    try:
        return dict(backend_view(root, name)["deployment"].get("replicas") or {})
    except (httpx.HTTPError, ValueError, StopIteration, KeyError):
        return {}


def served_by(metrics_url: str, name: str) -> dict[str, float]:
    """Requests each replica of a backend's deployment processed (Serve's own counter)."""
    text = httpx.get(metrics_url, timeout=10).text
    counts: dict[str, float] = {}
    for labels, value in re.findall(
        r"^ray_serve_deployment_request_counter_total\{([^}]*)\} (\S+)$", text, re.MULTILINE
    ):
        if f'deployment="backend-{name}"' in labels and 'application="elastic"' in labels:
            replica = re.search(r'replica="([^"]+)"', labels)
            if replica:
                counts[replica.group(1)] = counts.get(replica.group(1), 0.0) + float(value)
    return counts


class Load:
    """`clients` threads sending requests to a model until stopped; counts what failed."""

    def __init__(self, root: str, model: str, clients: int, body: dict[str, Any]) -> None:
        self.url = f"{root}/v1/chat/completions"
        self.body = {"model": model, "messages": [{"role": "user", "content": "hi"}], **body}
        self.stopped = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._run) for _ in range(clients)]

    def _run(self) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stopped.is_set():
                self.statuses.append(client.post(self.url, json=self.body).status_code)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stopped.set()
        for thread in self.threads:
            thread.join()


def scale_cycle(
    stack: Stack, root: str, name: str, clients: int, body: dict[str, Any]
) -> dict[str, float]:
    """Load until two replicas run and both served, then stop and wait for one; the times."""
    seen_states: set[str] = set()

    def watch(target: int) -> bool:
        states = replicas(root, name)
        seen_states.update(state for state, count in states.items() if count)
        return states.get("RUNNING") == target and not states.get("STARTING")

    # The view caches Serve's replica states for 2 s: the app's first replica may still show
    # STARTING there just after it answered.
    wait_until(lambda: watch(1), 60, f"{name} at 1 running replica")
    started = time.monotonic()
    with Load(root, name, clients, body) as load:
        # A second vLLM engine starts on two cores the first one keeps busy: ~70 s on a fast
        # machine, over 240 s on a slow CI one.
        wait_until(lambda: watch(2), 480, f"{name} scaled to 2 replicas")
        up = time.monotonic() - started
        view = backend_view(root, name)
        assert view["deployment"]["autoscaling"]["max_replicas"] == 2
        wait_until(lambda: len([v for v in served_by(stack.metrics_url, name).values() if v]) == 2,
                   60, f"both {name} replicas served")  # fmt: skip
    stopped = time.monotonic()
    wait_until(lambda: watch(1) and not replicas(root, name).get("STOPPING"), 120,
               f"{name} back to 1 replica")  # fmt: skip
    down = time.monotonic() - stopped
    assert "STARTING" in seen_states  # the view showed the new replica starting
    assert load.statuses and set(load.statuses) == {200}, set(load.statuses)
    print(f"\n{name}: 1 -> 2 replicas in {up:.1f}s under load, back to 1 in {down:.1f}s "
          f"after it stopped; {len(load.statuses)} requests, all 200")  # fmt: skip
    return {"up_s": up, "down_s": down}


def test_a_proxy_deployment_scales_out_and_back(stack: Stack, elastic: str) -> None:
    scale_cycle(stack, elastic, "elastic-proxy", 8, {})


def test_a_vllm_deployment_scales_out_and_back(stack: Stack, elastic: str) -> None:
    scale_cycle(stack, elastic, "elastic-vllm", 8, {"max_tokens": 48, "temperature": 0})
