"""The LLM-aware autoscaling signal on real Serve: a vLLM deployment with
`signal: tokens_in_flight` scales on the output tokens its requests may still produce
(reported by each replica, read by the custom policy in Serve's controller), where Serve's
default policy would not scale at all. Its own application, after test_autoscaling.py's is
gone: engines idle on 2 cores still cost CPU."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.helpers import TINY_MODEL, wait_until
from tests.integration.conftest import TINY_ENGINE, Stack
from tests.integration.test_autoscaling import FAST_AUTOSCALING, replicas, scale_cycle

pytestmark = pytest.mark.integration
PREFIX = "/elastic"  # scale_cycle reads Serve's metrics of the application "elastic"
BY_TOKENS = {**FAST_AUTOSCALING, "signal": "tokens_in_flight", "target_tokens_per_replica": 64}


@pytest.fixture(scope="module")
def by_tokens(stack: Stack) -> Iterator[str]:
    from ray import serve

    from gateway.app import build_app

    config: dict[str, Any] = {
        "backends": {
            "elastic-tokens": {
                "kind": "vllm",
                "model": "tiny-tokens",
                "source": str(TINY_MODEL),
                "accelerator": "cpu",
                "engine_kwargs": TINY_ENGINE,
                "deployment": {
                    "autoscaling_config": BY_TOKENS,
                    "max_ongoing_requests": 16,
                    "ray_actor_options": {"num_cpus": 1},
                },
            }
        },
        "ingress": {"health_check_interval_s": 1},
        "ledger": {"path": str(stack.logs / "tokens-ledger.sqlite")},
        "request_log": {"path": str(stack.logs / "tokens-requests.jsonl")},
    }
    serve.run(build_app(config), name="elastic", route_prefix=PREFIX, blocking=False)
    root = stack.root_url + PREFIX
    wait_until(lambda: replicas(root, "elastic-tokens").get("RUNNING") == 1, 300, "tokens app")
    yield root
    serve.delete("elastic")


def test_a_vllm_deployment_scales_on_tokens_in_flight(stack: Stack, by_tokens: str) -> None:
    # Two clients: Serve's default policy (target_ongoing_requests: 2) would never add a
    # replica for them; 96 tokens each is 192 tokens in flight, 3 replicas' worth at 64.
    scale_cycle(stack, by_tokens, "elastic-tokens", 2, {"max_tokens": 96, "temperature": 0})
