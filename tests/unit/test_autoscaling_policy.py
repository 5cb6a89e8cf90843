"""The tokens-in-flight autoscaling policy as Serve's controller calls it, and its config."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from deployments._autoscaling import TokensInFlightPolicy
from gateway.config import ConfigError, GatewayConfig


def context(tokens: list[float], ttfts: list[float], current: int = 1) -> SimpleNamespace:
    replicas = [f"r{i}" for i in range(len(tokens))]
    return SimpleNamespace(
        aggregated_metrics={
            "tokens_in_flight": dict(zip(replicas, tokens, strict=True)),
            "ttft_ms": dict(zip(replicas, ttfts, strict=True)),
        },
        current_num_replicas=current,
        capacity_adjusted_min_replicas=1,
        capacity_adjusted_max_replicas=4,
    )


def test_replicas_follow_tokens_in_flight_within_bounds() -> None:
    policy = TokensInFlightPolicy(target_tokens_per_replica=100)
    assert policy(context([250.0], [50.0]))[0] == 3
    assert policy(context([60.0, 30.0], [50.0, 50.0], current=2))[0] == 1
    assert policy(context([0.0], [0.0]))[0] == 1  # never below min_replicas
    assert policy(context([900.0, 900.0], [50.0, 50.0], current=2))[0] == 4  # nor above max


def test_a_slow_first_token_adds_a_replica() -> None:
    policy = TokensInFlightPolicy(target_tokens_per_replica=1000, target_ttft_ms=500)
    desired, state = policy(context([100.0, 100.0], [800.0, 200.0], current=2))
    assert desired == 3 and state["slow"]


def test_the_signal_is_for_vllm_backends_and_needs_its_target() -> None:
    scaling = {"min_replicas": 1, "max_replicas": 2, "signal": "tokens_in_flight"}
    with_target = {**scaling, "target_tokens_per_replica": 8}
    proxy = {"kind": "fake", "model": "x", "placement": "deployment",
             "deployment": {"autoscaling_config": with_target}}  # fmt: skip
    with pytest.raises(ConfigError, match="measured by vLLM replicas only"):
        GatewayConfig.load({"backends": {"p": proxy}})
    engine = {"kind": "vllm", "model": "m", "source": "models/tiny-llama",
              "deployment": {"autoscaling_config": scaling}}  # fmt: skip
    with pytest.raises(ConfigError, match="needs target_tokens_per_replica"):
        GatewayConfig.load({"backends": {"v": engine}})
    engine["deployment"]["autoscaling_config"] = {**scaling, "target_tokens_per_replica": 64}  # type: ignore[index]
    options = GatewayConfig.load({"backends": {"v": engine}}).backends["v"].deployment
    policy = options.serve_options()["autoscaling_config"]["policy"]
    assert policy == {
        "policy_function": "deployments._autoscaling:TokensInFlightPolicy",
        "policy_kwargs": {"target_tokens_per_replica": 64},
    }
